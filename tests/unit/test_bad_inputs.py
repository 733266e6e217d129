"""Bad inputs to `autodl search`: exit code 2, one line on stderr naming the problem and the fix.

Every case fails before any training (TensorFlow is never imported). Most cases run the real entry
point `autodl.cli.main()` in-process (fast); a handful run `python -m autodl.cli` in a subprocess,
which is exactly what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_harness import ANSI, Outcome, cli_env, run_cli
from cli_harness import assert_one_line_error as harness_one_line_error

from autodl.data.load import read_table

FAST = ["--no-tracking", "--trials", "0", "--time-limit", "5"]


@pytest.fixture
def run_main():
    """Run `autodl <args>` through cli.main() in this process."""
    return run_cli


def run_subprocess(*args: str, cwd: Path) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-m", "autodl.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(),
        timeout=60,
    )
    return Outcome(done.returncode, ANSI.sub("", done.stdout), ANSI.sub("", done.stderr))


def assert_one_line_error(outcome: Outcome, *needles: str) -> str:
    """Exit 2, exactly one stderr line with the problem before 'Fix:', no traceback; returns the line."""
    line = harness_one_line_error(outcome, *needles)
    assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr  # not even a blank line
    assert not line.endswith("?."), line
    return line


# --------------------------------------------------------------------------- small data files


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n).round(3),
            "c": rng.choice(["a", "b", "c"], n),
            "y": np.array(["no", "yes"] * (n // 2)),
        }
    )


def _write(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    frame.to_csv(path, index=False, **kwargs)
    return path


@pytest.fixture
def good_csv(tmp_path) -> Path:
    return _write(_frame(), tmp_path / "good.csv")


def _missing_file(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    return tmp_path / "nope.csv", ("not found", "nope.csv")


def _folder(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return folder, ("a_folder", "folder")


def _empty(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    return path, ("empty.csv", "empty")


def _header_only(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    path = tmp_path / "header.csv"
    path.write_text("x,c,y\n")
    return path, ("header.csv", "no data rows")


def _target_all_missing(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    frame = _frame()
    frame["y"] = np.nan
    return _write(frame, tmp_path / "nolabels.csv"), ("'y'", "missing")


def _constant_target(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    frame = _frame()
    frame["y"] = "yes"
    return _write(frame, tmp_path / "constant.csv"), ("'y'", "constant")


def _rare_class(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    frame = _frame()
    frame.loc[:1, "y"] = "rare_class"  # 2 rows, fewer than the 5 folds
    return _write(frame, tmp_path / "rare.csv"), ("rare_class", "--folds")


def _all_nan_feature(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    frame = _frame()
    frame["blank_col"] = np.nan
    return _write(frame, tmp_path / "blank.csv"), ("blank_col", "--drop")


def _infinite(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    frame = _frame()
    frame["x"] = frame["x"].astype(object)
    frame.loc[5, "x"] = "inf"
    return _write(frame, tmp_path / "inf.csv"), ("'x'", "infinite", "--drop")


def _not_utf8(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    path = tmp_path / "latin.csv"
    rows = b"".join(b"%d,a,%s\n" % (i, b"yes" if i % 2 else b"no") for i in range(40))
    path.write_bytes(b"x,c,y\n" + b"1,caf\xe9,yes\n" + rows)  # latin-1 'e acute'
    return path, ("latin.csv", "UTF-8", "--encoding")


def _not_utf8_at_end(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    # The bad byte falls in the last bytes of the sniffed sample: it must still be reported.
    path = tmp_path / "latin_end.csv"
    rows = b"".join(b"%d,a,%s\n" % (i, b"yes" if i % 2 else b"no") for i in range(40))
    path.write_bytes(b"x,c,y\n" + rows + b"1,caf\xe9")
    return path, ("latin_end.csv", "UTF-8")


BAD_FILES = {
    "missing_file": _missing_file,
    "folder": _folder,
    "empty_file": _empty,
    "header_only": _header_only,
    "target_all_missing": _target_all_missing,
    "constant_target": _constant_target,
    "class_smaller_than_folds": _rare_class,
    "all_nan_feature": _all_nan_feature,
    "infinite_values": _infinite,
    "not_utf8": _not_utf8,
    "not_utf8_at_end": _not_utf8_at_end,
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_one_line_error(case, tmp_path, run_main):
    path, needles = BAD_FILES[case](tmp_path)
    outcome = run_main("search", path, "--target", "y", *FAST)
    assert_one_line_error(outcome, *needles)


def test_target_not_found_suggests_closest_column(titanic_csv, run_main):
    outcome = run_main("search", titanic_csv, "--target", "survived", *FAST)
    line = assert_one_line_error(outcome, "'survived'", "not found")
    assert "'Survived'" in line.split("Fix:")[1]


def test_target_not_found_without_close_name_lists_columns(good_csv, run_main):
    line = assert_one_line_error(run_main("search", good_csv, "--target", "zzzz", *FAST), "'zzzz'")
    assert "x, c, y" in line


def test_class_smaller_than_folds_names_class_and_count(tmp_path, run_main):
    frame = _frame()
    frame.loc[:2, "y"] = "tiny"
    path = _write(frame, tmp_path / "tiny.csv")
    line = assert_one_line_error(run_main("search", path, "--target", "y", *FAST), "'tiny'", "3 rows")
    assert "--folds" in line.split("Fix:")[1]


def test_infinite_values_report_the_file_line(tmp_path, run_main):
    frame = _frame()
    frame["x"] = frame["x"].astype(object)
    frame.loc[:2, "y"] = np.nan  # rows dropped for a missing target must not shift the line number
    frame.loc[8, "x"] = "-inf"
    path = _write(frame, tmp_path / "inf_line.csv")
    # data row 8 (0-based) is file line 10 (line 1 is the header)
    assert_one_line_error(run_main("search", path, "--target", "y", *FAST), "'x'", "line 10")


def test_infinite_regression_target(tmp_path, run_main):
    frame = _frame()
    frame["y"] = np.random.default_rng(1).normal(size=len(frame))
    frame.loc[3, "y"] = np.inf
    path = _write(frame, tmp_path / "inf_target.csv")
    assert_one_line_error(run_main("search", path, "--target", "y", *FAST), "'y'", "infinite")


def test_column_name_with_brackets_is_printed_verbatim(tmp_path, run_main):
    frame = _frame()
    frame["weight [kg]"] = np.nan
    path = _write(frame, tmp_path / "units.csv")
    assert_one_line_error(run_main("search", path, "--target", "y", *FAST), "'weight [kg]'", "--drop")


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--folds", "1"], ("--folds", "1")),
        (["--folds", "0"], ("--folds",)),
        (["--test-size", "1.5"], ("--test-size", "1.5")),
        (["--test-size", "-0.1"], ("--test-size", "-0.1")),
        (["--repeats", "0"], ("--repeats",)),
        (["--task", "clustering"], ("--task", "clustering", "regression")),
        (["--metric", "rmse"], ("--metric", "rmse", "binary", "roc_auc")),
        (["--metric", "accuracyy"], ("--metric", "accuracyy")),
        (["--final", "average"], ("--final", "average")),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_flag_is_one_line_error(flags, needles, good_csv, run_main):
    assert_one_line_error(run_main("search", good_csv, "--target", "y", *FAST, *flags), *needles)


def test_unknown_space_is_one_line_error(good_csv, run_main):
    outcome = run_main(
        "search", good_csv, "--target", "y", "--no-tracking", "--time-limit", "5", "--space", "mpl"
    )
    assert_one_line_error(outcome, "'mpl'", "did you mean 'mlp'", "mlp_small")


def test_unknown_space_is_rejected_even_with_zero_trials(good_csv, run_main):
    # A typo in --space must not be silently ignored when only the baselines run.
    outcome = run_main("search", good_csv, "--target", "y", *FAST, "--space", "mpl")
    assert_one_line_error(outcome, "'mpl'")


def test_missing_space_file_is_one_line_error(good_csv, run_main):
    outcome = run_main("search", good_csv, "--target", "y", "--no-tracking", "--space", "nowhere.yaml")
    assert_one_line_error(outcome, "nowhere.yaml")


def test_regression_task_on_labels(good_csv, run_main):
    outcome = run_main("search", good_csv, "--target", "y", *FAST, "--task", "regression")
    assert_one_line_error(outcome, "--task regression", "'no'")


def test_unknown_encoding(good_csv, run_main):
    outcome = run_main("search", good_csv, "--target", "y", *FAST, "--encoding", "klingon-8")
    assert_one_line_error(outcome, "klingon-8")


def test_drop_unknown_column(good_csv, run_main):
    outcome = run_main("search", good_csv, "--target", "y", *FAST, "--drop", "X")
    assert_one_line_error(outcome, "'X'", "did you mean 'x'")


# --------------------------------------------------------------------------- real processes

SUBPROCESS_CASES = ["missing_file", "empty_file", "not_utf8", "infinite_values", "class_smaller_than_folds"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_file_in_a_real_process(case, tmp_path):
    path, needles = BAD_FILES[case](tmp_path)
    outcome = run_subprocess("search", path, "--target", "y", *FAST, cwd=tmp_path)
    assert_one_line_error(outcome, *needles)
    assert outcome.stdout.strip() == ""


@pytest.mark.parametrize(
    "flags",
    [["--folds", "1"], ["--test-size", "1.5"], ["--metric", "rmse"]],
    ids=lambda value: " ".join(value),
)
def test_bad_flag_in_a_real_process(flags, good_csv, tmp_path):
    outcome = run_subprocess("search", good_csv, "--target", "y", *FAST, *flags, cwd=tmp_path)
    assert_one_line_error(outcome, flags[0])


def test_target_not_found_in_a_real_process(titanic_csv, tmp_path):
    outcome = run_subprocess("search", titanic_csv, "--target", "survived", *FAST, cwd=tmp_path)
    assert_one_line_error(outcome, "did you mean 'Survived'")


# --------------------------------------------------------------------------- not an error


def test_semicolon_file_is_sniffed(tmp_path):
    frame = _frame(20)
    path = _write(frame, tmp_path / "semi.csv", sep=";")
    read = read_table(path)
    assert list(read.columns) == ["x", "c", "y"]
    assert len(read) == 20
    assert read["x"].tolist() == pytest.approx(frame["x"].tolist())
    assert read["y"].tolist() == frame["y"].tolist()


def test_semicolon_file_with_decimal_commas_in_quotes_is_sniffed(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text('name;amount;y\n"Smith, J.";3;a\n"Doe, A.";4;b\n"Roe, B.";5;a\n')
    read = read_table(path)
    assert list(read.columns) == ["name", "amount", "y"]
    assert read["name"].tolist() == ["Smith, J.", "Doe, A.", "Roe, B."]
