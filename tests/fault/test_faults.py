"""Faults during a search (issue 6): diverging and raising trials, an unwritable output folder,
and tracking URIs with a password.

Searches run in-process through `autodl.cli.main()` under a watchdog, on a small synthetic table.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_harness import QUICK, assert_one_line_error, assert_search_ok, run_cli

from autodl.cli import hide_passwords
from autodl.tracking.base import redact

KERAS = ["--folds", "2", "--baselines", "dummy,linear", "--no-tracking", "--no-capacity-check"]
KERAS += ["--time-limit", "120"]


@pytest.fixture
def regression_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["y"] = X @ np.array([1.0, 2.0, 3.0]) * 100 + rng.normal(size=120)
    path = tmp_path / "regression.csv"
    frame.to_csv(path, index=False)
    return path


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "outcomes.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- trials that fail


def test_a_diverging_trial_is_recorded_as_failed_and_kept_off_the_leaderboard(regression_csv, tmp_path):
    space = tmp_path / "diverge.yaml"
    space.write_text(
        textwrap.dedent(
            """\
            name: diverge
            description: plain SGD with an absurd learning rate, so the training loss becomes NaN or inf
            builder: mlp
            params:
              learning_rate: {type: float, low: 1.0e+4, high: 1.0e+5, log: true}
              units: {type: int, low: 8, high: 16}
            fixed: {max_epochs: 5, patience: 2}
            defaults: {learning_rate: 1.0e+4, units: 8}
            """
        )
    )
    output = tmp_path / "run"
    outcome = run_cli(
        "search",
        regression_csv,
        "--target",
        "y",
        "--space",
        space,
        "--trials",
        "2",
        *KERAS,
        "--output",
        output,
    )
    summary = assert_search_ok(outcome, output)
    trials = [r for r in _records(output) if r["family"] == "keras"]
    assert len(trials) == 2  # the search went on after the first diverging trial
    for trial in trials:
        assert trial["state"] == "failed", trial
        assert re.search(r"TrainingDiverged: training loss became (nan|inf|-inf)", trial["reason"]), trial
    assert "failed: TrainingDiverged" in outcome.stdout
    leaderboard = pd.read_csv(output / "leaderboard.csv")
    assert not leaderboard["candidate"].str.startswith("keras").any(), leaderboard
    assert summary["final_model"] == "linear"
    assert np.isfinite(summary["cv_score"])


def _failing_hypermodel(tmp_path: Path) -> str:
    # A unique module name: the hypermodel file is imported into this test process.
    path = tmp_path / f"broken_{uuid.uuid4().hex[:8]}.py"
    path.write_text(
        textwrap.dedent(
            """\
            def build_model(hp):
                units = hp.Int("units", 4, 64)
                raise ValueError(f"no layer can have {units} units today")
            """
        )
    )
    return f"{path}:build_model"


def test_a_hypermodel_that_raises_fails_its_trials_and_five_in_a_row_stop_the_search(
    regression_csv, tmp_path
):
    output = tmp_path / "run"
    space = _failing_hypermodel(tmp_path)
    outcome = run_cli(
        "search",
        regression_csv,
        "--target",
        "y",
        "--space",
        space,
        "--trials",
        "20",
        *KERAS,
        "--output",
        output,
    )
    summary = assert_search_ok(outcome, output)
    trials = [r for r in _records(output) if r["family"] == "keras"]
    assert len(trials) == 5, [t["name"] for t in trials]
    for trial in trials:
        assert trial["state"] == "failed"
        assert re.fullmatch(r"ValueError: no layer can have \d+ units today", trial["reason"]), trial
    stop = summary["decisions"]["stop_reason"]
    assert stop.startswith("5 trials failed in a row") and "no layer can have" in stop, stop
    assert "Stopped: 5 trials failed in a row" in outcome.stdout
    assert not pd.read_csv(output / "leaderboard.csv")["candidate"].str.startswith("keras").any()


def test_when_every_candidate_fails_the_error_says_so_in_one_line(regression_csv, tmp_path):
    output = tmp_path / "run"
    space = _failing_hypermodel(tmp_path)
    outcome = run_cli(
        "search",
        regression_csv,
        "--target",
        "y",
        "--space",
        space,
        "--trials",
        "20",
        *KERAS,
        "--baselines",
        "none",
        "--output",
        output,
    )
    assert_one_line_error(outcome, "no candidate", code=1)
    assert "no layer can have" in outcome.stdout  # the reasons the error points at were printed


# --------------------------------------------------------------------------- output folder


def test_output_folder_under_a_file_is_a_one_line_error_before_any_work(regression_csv, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder is needed")
    outcome = run_cli("search", regression_csv, "--target", "y", *QUICK, "--output", blocker / "run")
    assert_one_line_error(outcome, "cannot write to the output folder", "--output")
    assert "Baselines" not in outcome.stdout and outcome.stdout.strip() == ""


@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, options: str):
    """A tmpfs at `folder` (needs root and a kernel that allows it; skips the test otherwise)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_read_only_output_folder_is_a_one_line_error_before_any_work(regression_csv, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 500
    try:
        with contextlib.ExitStack() as stack:
            if os.access(parent, os.W_OK):  # root ignores permissions: a read-only mount binds it
                parent.chmod(stat.S_IRWXU)
                stack.enter_context(_mounted_tmpfs(parent, "ro,size=1m"))
            outcome = run_cli("search", regression_csv, "--target", "y", *QUICK, "--output", parent / "run")
        assert_one_line_error(outcome, "cannot write to the output folder")
        assert re.search("Permission denied|Read-only file system", outcome.stderr)
        assert outcome.stdout.strip() == ""
    finally:
        parent.chmod(stat.S_IRWXU)


def test_too_little_free_disk_is_a_one_line_error_before_any_work(regression_csv, tmp_path):
    with _mounted_tmpfs(tmp_path / "small", "size=64m") as small:
        outcome = run_cli("search", regression_csv, "--target", "y", *QUICK, "--output", small / "run")
    assert_one_line_error(outcome, "MiB free on the disk holding", "another disk")
    assert outcome.stdout.strip() == ""


# A Keras trial's files are written at once, a baseline's in the background.
@pytest.mark.parametrize("full_at", ["keras_trial_1", "linear"])
def test_a_disk_that_fills_during_the_search_stops_it_cleanly_and_resume_finishes_it(
    regression_csv, tmp_path, monkeypatch, full_at
):
    from autodl import search
    from autodl.errors import DiskFullError
    from autodl.store import RunStore

    options = dict(
        target="y",
        space="mlp_small",
        trials=2,
        time_limit=300,
        folds=2,
        max_epochs=2,
        baselines=("dummy", "linear"),
        capacity_check=False,
        tracking=False,
        output_dir=tmp_path / "run",
    )
    real_save = RunStore._save_candidate

    def save_until_the_disk_fills(self, name, family, cv):
        if name == full_at:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / name))
        real_save(self, name, family, cv)

    monkeypatch.setattr(RunStore, "_save_candidate", save_until_the_disk_fills)
    with pytest.raises(DiskFullError, match="--resume --output") as raised:
        search(regression_csv, **options)
    assert len(str(raised.value).splitlines()) == 1
    recorded = [r["name"] for r in _records(tmp_path / "run")]

    monkeypatch.setattr(RunStore, "_save_candidate", real_save)  # space freed
    result = search(regression_csv, **options, resume=True)
    by_name = {o.name: o for o in result.outcomes}
    assert sorted(by_name) == ["dummy", "keras_trial_0", "keras_trial_1", "linear"]
    assert all(o.state == "complete" for o in result.outcomes)
    if full_at == "keras_trial_1":
        assert recorded == ["dummy", "linear", "keras_trial_0"]
        # trial 1 finished in the study before its models hit the full disk: scores kept, not rerun
        assert len(by_name["keras_trial_1"].fold_scores) == 2
        assert "not saved" in by_name["keras_trial_1"].reason
    else:
        # the linear model's files were being written in the background when the disk filled:
        # its outcome line (queued behind them) was never written, so the resumed search fits it again
        assert recorded == ["dummy"]
        assert len(by_name["linear"].fold_scores) == 2


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://user:secret@mlflow.example.com:5000/", "http://user:***@mlflow.example.com:5000/"),
        ("https://alice:s%40cr%2Fet@host/path?x=1", "https://alice:***@host/path?x=1"),
        ("postgresql://bob:secret@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
        ("http://:secret@host", "http://:***@host"),
        ("http://token@host", "http://token@host"),
        ("sqlite:///tmp/user@host/mlflow.db", "sqlite:///tmp/user@host/mlflow.db"),
        ("databricks", "databricks"),
        (None, None),
    ],
)
def test_redact_hides_only_the_password(uri, shown):
    assert redact(uri) == shown
    if uri is not None:
        assert hide_passwords(f"error talking to {uri} (refused)") == f"error talking to {shown} (refused)"


def _tracked_search(csv: Path, tracking_uri: str, output: Path):
    """A quick search of `csv` logged to `tracking_uri`."""
    flags = [f for f in QUICK if f != "--no-tracking"]
    return run_cli("search", csv, "--target", "y", *flags, "--tracking-uri", tracking_uri, "--output", output)


def test_an_unreachable_tracking_server_never_prints_its_password(regression_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    outcome = _tracked_search(regression_csv, "http://user:secret@127.0.0.1:1/", tmp_path / "run")
    assert outcome.code != 0
    assert "secret" not in outcome.text, outcome.text
    assert "user:***@127.0.0.1" in outcome.text
    for log in re.findall(r"(/\S+autodl-crash-\S+\.log)", outcome.stderr):
        assert "secret" not in Path(log).read_text()


def test_an_unreachable_tracking_server_is_a_one_line_error(regression_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    outcome = _tracked_search(regression_csv, "http://user:secret@127.0.0.1:1/", tmp_path / "run")
    line = assert_one_line_error(outcome, "127.0.0.1", "--no-tracking")
    assert "secret" not in line


def test_a_local_store_that_cannot_be_opened_is_a_one_line_error_before_any_baseline(
    regression_csv, tmp_path
):
    store = tmp_path / "not-a-database.db"
    store.write_text("not an SQLite file\n")
    output = tmp_path / "run"
    outcome = _tracked_search(regression_csv, f"sqlite:///{store}", output)
    assert_one_line_error(outcome, "not-a-database.db", "--no-tracking")
    assert not (output / "outcomes.jsonl").exists()


def test_the_output_folder_never_stores_the_tracking_password(regression_csv, tmp_path, monkeypatch):
    # The tracker is left out (as when the server accepts the login): what the output folder keeps
    # does not depend on it.
    import autodl.api

    monkeypatch.setattr(autodl.api, "make_tracker", lambda config: None)
    output = tmp_path / "run"
    outcome = _tracked_search(regression_csv, "https://user:secret@mlflow.example.com/", output)
    assert_search_ok(outcome, output)
    assert "secret" not in outcome.text
    leaked = [p.name for p in output.rglob("*") if p.is_file() and b"secret" in p.read_bytes()]
    assert not leaked, leaked
