"""Awkward and bad data files (issue 6): what `autodl search` and `autodl predict` give the user.

Cases tests/unit/test_bad_inputs.py already covers (missing, empty and header-only files, an
all-missing target or feature, a constant target, a class smaller than the folds, infinite values,
bytes that are not UTF-8) are not repeated. Each search here fits only the linear baseline on two
folds (`--trials 0`), in-process through `autodl.cli.main()`, under a watchdog.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_harness import (
    QUICK,
    assert_no_crash,
    assert_one_line_error,
    assert_search_ok,
    column_profile,
    run_cli,
)

from autodl.data.load import read_table
from autodl.model import TabularModel

N = 60


def _frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(3)
    return pd.DataFrame(
        {
            "x": x,
            "c": rng.choice(["red", "green", "blue"], n),
            "y": np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no"),
        }
    )


def _search(path: Path, *extra: str, target: str = "y", timeout: int = 120):
    output = path.parent / f"out-{path.name.replace('.', '_')}"
    return run_cli(
        "search", path, "--target", target, *QUICK, "--output", output, *extra, timeout=timeout
    ), output


# --------------------------------------------------------------------------- files that must work


@pytest.mark.parametrize("sep", ["\t", ";", "|"], ids=["tab", "semicolon", "pipe"])
def test_non_comma_delimiter_is_sniffed_end_to_end(sep, tmp_path):
    frame = _frame()
    path = tmp_path / "data.csv"
    frame.to_csv(path, sep=sep, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert summary["summary"]["columns"] == 3 and summary["summary"]["rows"] == N
    assert column_profile(summary, "x")["kind"] == "numeric"
    assert column_profile(summary, "c")["kind"] == "categorical"


@pytest.mark.parametrize("sep", [",", "\t"], ids=["comma", "tab"])
def test_quoted_fields_with_newlines_delimiters_and_quotes(sep, tmp_path):
    frame = _frame()
    # Each label holds the delimiter, a newline and a quote; 3 distinct labels, 20 rows each.
    labels = {"red": 'red, "dark"\nshade', "green": f"green{sep} light", "blue": 'blue "sky"; | pale'}
    frame["c"] = frame["c"].map(labels)
    path = tmp_path / "quoted.csv"
    frame.to_csv(path, sep=sep, index=False)
    assert read_table(path)["c"].tolist() == frame["c"].tolist()
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert summary["summary"]["rows"] == N  # an embedded newline did not split a row
    profile = column_profile(summary, "c")
    assert profile["kind"] == "categorical" and profile["distinct"] == 3


def test_byte_order_mark_before_the_target_column(tmp_path):
    # With the BOM glued to the first name, '--target y' would not be found.
    frame = _frame()[["y", "x", "c"]]
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False, sep=";").encode("utf-8"))
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert summary["summary"]["target"] == "y"


def test_mixed_numbers_and_missing_markers_are_numeric_with_missing(tmp_path):
    frame = _frame().astype({"x": object})
    frame.loc[::3, "x"] = "n/a"
    frame.loc[1::6, "x"] = "12"
    frame.loc[2::6, "x"] = "3.5"
    path = tmp_path / "mixed.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    profile = column_profile(summary, "x")
    assert profile["kind"] == "numeric", profile
    assert profile["missing"] == len(frame.loc[::3])


@pytest.mark.parametrize("marker", ["?", "-", "missing"])
def test_numbers_with_placeholder_cells_stay_numeric(marker, tmp_path):
    # UCI-style files mark missing numbers with '?'; the column must not become an "id" or labels.
    frame = _frame(100)
    x = frame["x"].astype(object)
    x[::10] = marker
    frame["x"] = x
    path = tmp_path / "placeholders.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    profile = column_profile(summary, "x")
    assert profile["kind"] == "numeric", profile
    assert profile["missing"] == 10
    model = TabularModel.load(output / "model")
    rows = frame.drop(columns=["y"]).head(12)
    assert np.isfinite(model.predict_proba(rows).astype(float)).all()


def test_numbers_with_thousands_separators_are_numeric(tmp_path):
    frame = _frame()
    frame["amount"] = [f"{v:,}" for v in np.random.default_rng(1).integers(1_000, 5_000_000, N)]
    path = tmp_path / "thousands.csv"
    frame.to_csv(path, index=False)
    assert read_table(path)["amount"].str.contains(",").all()  # quoted "1,234,567" cells
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert column_profile(summary, "amount")["kind"] == "numeric"


def test_decimal_commas_currency_and_percent_cells_are_numbers_end_to_end(tmp_path):
    # A European export: ';' between fields, ',' before the fraction; and amounts with units.
    frame = _frame(100)
    rng = np.random.default_rng(2)
    frame["rate"] = [f"{v:.1f}%" for v in rng.uniform(1, 30, 100)]
    frame["cost"] = [f"${v:,.2f}" for v in rng.uniform(100, 90_000, 100)]
    path = tmp_path / "european.csv"
    frame.to_csv(path, index=False, sep=";", decimal=",")
    assert read_table(path)["x"].astype(str).str.contains(",").any()
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert "decimal comma" in column_profile(summary, "x")["reason"]
    assert column_profile(summary, "rate")["kind"] == "numeric"
    assert column_profile(summary, "cost")["kind"] == "numeric"  # not an id of unique labels
    rows = read_table(path).drop(columns=["y"])
    inputs = TabularModel.load(output / "model")
    assert np.isfinite(inputs.predict_proba(rows).astype(float)).all()


def test_booleans_as_strings(tmp_path):
    frame = _frame()
    flags = np.random.default_rng(2).integers(0, 2, N).astype(bool)
    frame["tf"] = np.where(flags, "true", "false")
    frame["yn"] = np.where(flags[::-1], "yes", "no")
    frame["with_missing"] = pd.Series(np.where(flags, "True", "False"), dtype=object)
    frame.loc[::7, "with_missing"] = None
    path = tmp_path / "bools.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    for name in ("tf", "yn", "with_missing"):
        assert column_profile(summary, name)["kind"] == "categorical", name
    # Rows without a missing cell are read as a true bool column: the model must still take them.
    rows = frame.drop(columns=["y"]).dropna().head(5)
    rows_path = tmp_path / "rows.csv"
    rows.to_csv(rows_path, index=False)
    predicted = run_cli("predict", output / "model", rows_path, "-o", tmp_path / "p.csv")
    assert_no_crash(predicted)
    assert predicted.code == 0, predicted.text
    assert len(pd.read_csv(tmp_path / "p.csv")) == 5


def test_datetime_column_in_several_formats(tmp_path):
    frame = _frame()
    stamps = pd.date_range("2021-01-03", periods=N, freq="9D")
    formats = ["%Y-%m-%d", "%Y/%m/%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
    frame["when"] = [stamp.strftime(formats[i % len(formats)]) for i, stamp in enumerate(stamps)]
    path = tmp_path / "dates.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert column_profile(summary, "when")["kind"] == "datetime"


def test_target_with_missing_values_drops_those_rows_and_says_so(tmp_path):
    frame = _frame().astype({"y": object})
    frame.loc[[3, 10, 11, 40], "y"] = np.nan
    path = tmp_path / "nan_target.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert "dropped 4 rows whose target is missing" in outcome.stdout
    assert summary["summary"]["rows_missing_target"] == 4
    assert summary["summary"]["dev_rows"] + summary["summary"]["test_rows"] == N - 4


def test_more_than_a_thousand_categories(tmp_path):
    n = 3000
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 1200, n)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n).round(3),
            "shop": [f"shop_{c:04d}" for c in codes],
            "y": np.where(codes % 2 == 0, "even", "odd"),
        }
    )
    path = tmp_path / "many_categories.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    profile = column_profile(summary, "shop")
    assert profile["kind"] == "categorical" and profile["distinct"] > 1000
    # High cardinality is bounded: rare categories are grouped, not one column each.
    model = TabularModel.load(output / "model")
    pipeline = model.members[0].pipelines[0]
    width = pipeline[:-1].transform(frame.drop(columns=["y"]).head(50)).shape[1]
    assert width <= 40, width


def test_column_names_like_keywords_with_spaces_and_unicode_end_to_end(tmp_path):
    rng = np.random.default_rng(4)
    names = ["class", "lambda", "None", "my column", "température °C", "列", "a,b", 'say "hi"', "1"]
    frame = pd.DataFrame({name: rng.normal(size=N).round(3) for name in names})
    frame["import"] = rng.choice(["from", "as", "def"], N)
    frame["y"] = np.where(frame["class"] + frame["列"] > 0, "yes", "no")
    path = tmp_path / "odd_names.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert {c["name"] for c in summary["summary"]["columns_profile"]} == {*names, "import"}
    rows = frame.drop(columns=["y"]).head(7)
    rows_path = tmp_path / "rows.csv"
    rows.to_csv(rows_path, index=False)
    predicted = run_cli("predict", output / "model", rows_path, "-o", tmp_path / "p.csv")
    assert_no_crash(predicted)
    assert predicted.code == 0, predicted.text
    out = pd.read_csv(tmp_path / "p.csv")
    assert len(out) == 7 and set(out["prediction"]) <= {"yes", "no"}


def test_gzip_compressed_csv(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        _frame().to_csv(handle, sep=";", index=False)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    assert summary["summary"]["columns"] == 3


def test_parquet_file_with_native_types(tmp_path):
    frame = _frame()
    frame["flag"] = frame["x"] > 0.5
    frame["when"] = pd.date_range("2020-01-01", periods=N, freq="D")
    frame["c"] = frame["c"].astype("category")
    frame["count"] = pd.array(np.arange(N) % 7, dtype="Int64")
    frame.loc[5, "count"] = pd.NA
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    outcome, output = _search(path)
    summary = assert_search_ok(outcome, output)
    kinds = {c["name"]: c["kind"] for c in summary["summary"]["columns_profile"]}
    assert kinds == {
        "x": "numeric",
        "c": "categorical",
        "flag": "categorical",
        "when": "datetime",
        "count": "numeric",
    }
    predicted = run_cli("predict", output / "model", path, "-o", tmp_path / "p.csv")
    assert_no_crash(predicted)
    assert predicted.code == 0, predicted.text


def test_very_wide_file_finishes_in_bounded_time(tmp_path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(60, 5000)).round(2), columns=[f"f{i}" for i in range(5000)])
    frame["y"] = np.where(frame["f0"] > 0, "yes", "no")
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    outcome, output = _search(path, timeout=150)
    assert_no_crash(outcome)
    if outcome.code == 0:
        assert_search_ok(outcome, output)
    else:  # refusing such a table is allowed, with the one-line error
        assert_one_line_error(outcome)
    assert outcome.seconds < 150


# --------------------------------------------------------------------------- files that must be refused


def test_duplicate_column_names_are_a_one_line_error(tmp_path):
    frame = _frame()
    path = tmp_path / "dups.csv"
    body = frame.assign(x2=frame["x"] * 2)[["x", "c", "x2", "y"]].to_csv(index=False, header=False)
    path.write_text("x,c,x,y\n" + body)  # pandas would silently call the copy 'x.1'
    line = assert_one_line_error(_search(path)[0], "'x'", "dups.csv")
    assert "unique" in line.split("Fix:")[1]


def test_duplicate_names_in_a_gzip_file_and_a_real_dotted_name(tmp_path):
    path = tmp_path / "dups.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a;b;a;y\n" + "".join(f"{i};{i % 3};{i * 2};{'yn'[i % 2]}\n" for i in range(40)))
    assert_one_line_error(_search(path)[0], "'a'")
    # A header that really says 'a.1' next to 'a' is not a duplicate.
    fine = tmp_path / "dotted.csv"
    fine.write_text("a,a.1,y\n" + "".join(f"{i % 5},{i % 3},{'yn'[i % 2]}\n" for i in range(40)))
    assert list(read_table(fine).columns) == ["a", "a.1", "y"]


def test_target_with_one_row_per_class(tmp_path):
    frame = _frame()
    frame["y"] = [f"customer {i}" for i in range(N)]
    path = tmp_path / "one_per_class.csv"
    frame.to_csv(path, index=False)
    line = assert_one_line_error(_search(path)[0], "'y'", "one row")
    assert "--folds" not in line  # lowering the folds cannot help


def test_target_of_timestamps_with_a_few_repeats_is_not_taken_for_classes(tmp_path):
    # R's vcd Bundesliga table: 'Date' holds match kick-offs, a few shared by several matches.
    frame = _frame()
    frame["y"] = [f"1963-08-{1 + i // 40:02d} {i % 20:02d}:30:00" for i in range(N)]
    path = tmp_path / "kickoffs.csv"
    frame.to_csv(path, index=False)
    line = assert_one_line_error(
        _search(path)[0], "'y'", "an identifier, a date or free text cannot be classes"
    )
    assert "add rows of class" not in line


def test_file_of_one_row(tmp_path):
    path = tmp_path / "one_row.csv"
    path.write_text("x,c,y\n0.5,red,yes\n")
    assert_one_line_error(_search(path)[0], "1 row", "'y'")


def test_regression_file_of_two_rows(tmp_path):
    # Two rows used to end in an internal error from the fold splitter.
    path = tmp_path / "two_rows.csv"
    path.write_text("x,y\n0.5,1.25\n0.7,2.5\n")
    assert_one_line_error(_search(path)[0], "2 rows")


def test_header_split_at_the_wrong_delimiter_names_the_delimiter(tmp_path):
    # One data row gives the sniffer little to go on: ';' lost to the commas of '1,234,567'.
    path = tmp_path / "glued.csv"
    path.write_text("my col;a,b;température;target\nrow 0 says 746580;591,781;-4;yes\n")
    outcome = run_cli("search", path, "--target", "target", *QUICK, "--delimiter", ",")
    assert_one_line_error(outcome, "'target' not found", "--delimiter ';'")


def test_class_too_small_for_any_fold_count_suggests_no_impossible_fold_count(tmp_path):
    frame = _frame()
    frame.loc[0, "y"] = "single"
    path = tmp_path / "single.csv"
    frame.to_csv(path, index=False)
    line = assert_one_line_error(_search(path)[0], "'single'", "1 rows")
    assert "--folds" not in line.split("Fix:")[1], line


# --------------------------------------------------------------------------- prediction files


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A model trained on numeric, categorical, boolean and date columns; and its training frame."""
    work = tmp_path_factory.mktemp("trained")
    frame = _frame(80)
    frame["flag"] = np.where(frame.index % 3 == 0, "yes", "no")
    frame["when"] = pd.date_range("2022-02-01", periods=80, freq="3D").strftime("%Y-%m-%d")
    path = work / "train.csv"
    frame.to_csv(path, index=False)
    outcome = run_cli("search", path, "--target", "y", *QUICK, "--output", work / "run")
    assert_search_ok(outcome, work / "run")
    return work / "run" / "model", frame


def _predict(model: Path, rows: pd.DataFrame, tmp_path: Path):
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    return run_cli("predict", model, path, "-o", tmp_path / "predictions.csv")


def test_prediction_file_missing_a_training_column(trained, tmp_path):
    model, frame = trained
    outcome = _predict(model, frame.drop(columns=["y", "c"]).head(5), tmp_path)
    assert_one_line_error(outcome, "'c'", "lacks")
    assert not (tmp_path / "predictions.csv").exists()


def test_prediction_file_with_extra_columns_warns_and_predicts(trained, tmp_path):
    model, frame = trained
    rows = frame.head(6).assign(comment="new", score=1.5)  # the target column may stay too
    outcome = _predict(model, rows, tmp_path)
    assert_no_crash(outcome)
    assert outcome.code == 0, outcome.text
    assert "ignoring 2 column(s)" in outcome.stderr and "comment" in outcome.stderr
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 6


def test_prediction_file_with_new_categories_and_an_empty_column(trained, tmp_path):
    model, frame = trained
    rows = frame.drop(columns=["y"]).head(6).copy()
    rows["c"] = ["purple", "red", "never-seen", "green", "", "blue"]
    rows["flag"] = ["maybe", "yes", "no", "perhaps", "yes", "no"]
    rows["when"] = ["2031-12-31", "not a date", "", "2022-02-01", "1999-01-01", "2022-03-01"]
    rows["x"] = np.nan  # a whole column left empty
    outcome = _predict(model, rows, tmp_path)
    assert_no_crash(outcome)
    assert outcome.code == 0, outcome.text
    out = pd.read_csv(tmp_path / "predictions.csv")
    assert len(out) == 6 and set(out["prediction"]) <= {"yes", "no"}
    assert np.isfinite(out[["proba_no", "proba_yes"]].to_numpy()).all()


def test_a_table_too_big_for_memory_is_refused_before_reading(tmp_path):
    from autodl.data.load import check_memory
    from autodl.errors import DataError

    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000)
    check_memory(path, available=10 * 2**30)  # plenty: no error
    with pytest.raises(DataError, match="memory") as error:
        check_memory(path, available=1000)
    assert "Fix:" in str(error.value) and "\n" not in str(error.value)
