"""Ctrl-C, SIGTERM and SIGKILL during a real `autodl search` process (issue 6).

Each test starts `python -m autodl.cli search examples/data/titanic.csv --space mlp_small ...`
with more trials than it can finish, waits until the first Keras trial is recorded in the output
folder's outcomes.jsonl, and then interrupts or kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_harness import TITANIC, cli_env, start_cli

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

SEARCH = [
    "search",
    TITANIC,
    "--target",
    "Survived",
    "--space",
    "mlp_small",
    "--time-limit",
    "300",
    "--baselines",
    "dummy,linear",
    "--folds",
    "2",
    "--max-epochs",
    "3",
    "--no-capacity-check",
    "--seed",
    "0",
]
STARTUP_LIMIT = 240  # seconds until the first Keras trial is recorded, on two busy cores


def _records(output: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(output.glob("outcomes*.jsonl"))
        for line in path.read_text().splitlines()
        if line.endswith("}")
    ]


def _wait_for_keras_trial(process: subprocess.Popen, output: Path, work: Path) -> list[dict]:
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        records = _records(output)
        if any(r["family"] == "keras" for r in records):
            return records
        if process.poll() is not None:
            pytest.fail(f"the search ended early ({process.returncode}): {_read(work, 'stderr.txt')}")
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no Keras trial recorded within {STARTUP_LIMIT}s")


def _read(work: Path, name: str) -> str:
    return (work / name).read_text(errors="replace")


def _wait(process: subprocess.Popen, seconds: float) -> float:
    """Wait for the process to end; returns how long it took (fails the test if it does not)."""
    started = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the search did not end within {seconds}s of the signal")
    return time.monotonic() - started


@pytest.mark.parametrize(
    "signum",
    # one handler serves both signals: SIGTERM's run is in the slow set to keep CI short
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupt_keeps_the_best_model_and_exits_130(signum, tmp_path):
    output = tmp_path / "run"
    process = start_cli(*SEARCH, "--trials", "50", "--no-tracking", "--output", output, cwd=tmp_path)
    before = _wait_for_keras_trial(process, output, tmp_path)
    process.send_signal(signum)
    _wait(process, 120)
    stdout, stderr = _read(tmp_path, "stdout.txt"), _read(tmp_path, "stderr.txt")
    assert process.returncode == 130, (process.returncode, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr and "internal error" not in stderr
    # The printed summary says what happened and where the model is.
    assert "Interrupted: finishing with the candidates completed so far" in stdout
    assert "Stopped: interrupted." in stdout
    assert f"Saved the model and summary to {output}" in stdout
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["decisions"]["stop_reason"] == "interrupted"
    assert (output / "model" / "autodl-model.json").is_file()
    # Every trial finished before the signal is in the leaderboard; nothing half-trained is.
    leaderboard = pd.read_csv(output / "leaderboard.csv")
    finished = {r["name"] for r in before if r["state"] == "complete"}
    assert finished <= set(leaderboard["candidate"])
    recorded = {r["name"] for r in _records(output) if r["state"] == "complete"}
    assert set(leaderboard["candidate"]) == recorded


def test_second_ctrl_c_exits_at_once(tmp_path):
    output = tmp_path / "run"
    process = start_cli(*SEARCH, "--trials", "50", "--no-tracking", "--output", output, cwd=tmp_path)
    _wait_for_keras_trial(process, output, tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    seconds = _wait(process, 30)
    assert process.returncode != 0
    assert process.returncode in (130, -signal.SIGINT), process.returncode
    assert seconds < 30
    assert "Traceback" not in _read(tmp_path, "stderr.txt")


def test_an_interrupted_api_search_returns_its_model_and_gives_ctrl_c_back(tmp_path):
    """From Python (a notebook) Ctrl-C ends the search with what finished, and afterwards
    Ctrl-C is the caller's KeyboardInterrupt again, not a kill (the final stage's setting)."""
    output = tmp_path / "run"
    script = f"""
import signal
import autodl

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under a background CI
result = autodl.search(
    {str(TITANIC)!r}, target="Survived", space="mlp_small", time_limit=300, trials=50,
    baselines=("dummy", "linear"), folds=2, max_epochs=3, capacity_check=False, seed=0,
    tracking=False, output_dir={str(output)!r},
)
print("interrupted:", result.interrupted, "model:", result.model is not None)
print("handler:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
try:
    signal.raise_signal(signal.SIGINT)
except KeyboardInterrupt:
    print("ctrl-c: KeyboardInterrupt")
"""
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=(tmp_path / "stdout.txt").open("w"),
        stderr=(tmp_path / "stderr.txt").open("w"),
        cwd=tmp_path,
        env=cli_env(),
    )
    _wait_for_keras_trial(process, output, tmp_path)
    process.send_signal(signal.SIGINT)
    _wait(process, 120)
    stdout = _read(tmp_path, "stdout.txt")
    assert process.returncode == 0, (stdout[-2000:], _read(tmp_path, "stderr.txt")[-2000:])
    assert "interrupted: True model: True" in stdout
    assert "handler: True" in stdout
    assert "ctrl-c: KeyboardInterrupt" in stdout


def test_ctrl_c_while_a_fresh_trial_process_starts_prints_no_traceback(tmp_path):
    """A terminal's Ctrl-C reaches its whole process group: a trial process still importing
    TensorFlow printed KeyboardInterrupt's traceback under the search's summary."""
    output = tmp_path / "run"
    args = (*SEARCH, "--trials", "50", "--trials-per-process", "1", "--no-tracking", "--output", output)
    process = start_cli(*args, cwd=tmp_path, new_session=True)
    _wait_for_keras_trial(process, output, tmp_path)
    deadline = time.monotonic() + 60
    while not _children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "no trial process took the search over"
    # Only the search gets the terminal's signals; it stops its trial processes itself.
    assert all(os.getpgid(pid) != process.pid for pid in workers)
    time.sleep(0.2)  # the trial process is importing its modules for the next second or two
    os.killpg(process.pid, signal.SIGINT)
    _wait(process, 120)
    stderr = _read(tmp_path, "stderr.txt")
    assert process.returncode == 130, (process.returncode, stderr[-2000:])
    assert "Traceback" not in stderr + _read(tmp_path, "stdout.txt"), stderr[-2000:]


def _running_trials(journal: Path) -> int:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.is_file():
        return 0
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="autodl", storage=storage)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _kill_and_resume(tmp_path: Path, *, when: str, tracking: bool) -> tuple[list[dict], Path, str]:
    """SIGKILL a search, then resume it with the same flags. `when`: 'baselines', 'trial', or
    'handover' (during a trial of the fresh process that took the search over after one trial).

    Returns the records of the killed run, the output folder and the MLflow store.
    """
    output = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'm.db'}"
    # 'trial' kills during trial 1, which then counts as a failed trial: trial 2 runs on resume.
    trials = "1" if when == "baselines" else "3"
    flags = [*SEARCH, "--trials", trials, "--output", output, "--experiment", "kill-resume"]
    if not tracking:
        flags.append("--no-tracking")
    if when == "handover":
        flags += ["--trials-per-process", "1"]
    process = start_cli(*flags, cwd=tmp_path, MLFLOW_TRACKING_URI=store)
    worker = None
    if when == "baselines":  # right after the last baseline: before the Keras search has started
        deadline = time.monotonic() + STARTUP_LIMIT
        while not any(r["name"] == "linear" for r in _records(output)):
            assert process.poll() is None and time.monotonic() < deadline, _read(tmp_path, "stderr.txt")
            time.sleep(0.05)
    elif when == "handover":
        _wait_for_keras_trial(process, output, tmp_path)
        deadline = time.monotonic() + STARTUP_LIMIT
        while not (_children(process.pid) and _running_trials(output / "study.journal")):
            assert process.poll() is None and time.monotonic() < deadline, _read(tmp_path, "stderr.txt")
            time.sleep(0.2)
        [worker] = _children(process.pid)
    else:
        _wait_for_keras_trial(process, output, tmp_path)
        time.sleep(1.0)  # into the next trial
    process.kill()
    process.wait(timeout=30)
    if worker is not None:  # the worker dies with the search instead of writing on into the study
        deadline = time.monotonic() + 15
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{worker}").exists(), "the trial process outlived the killed search"
        assert _running_trials(output / "study.journal"), "an orphaned trial process finished its trial"
    first = _records(output)
    assert not (output / "summary.json").exists()
    if when == "trial" and not _running_trials(output / "study.journal"):
        pytest.skip("the kill landed between two trials")

    resumed = start_cli(*flags, "--resume", cwd=tmp_path, MLFLOW_TRACKING_URI=store)
    _wait(resumed, 400)
    stdout, stderr = _read(tmp_path, "stdout.txt"), _read(tmp_path, "stderr.txt")
    assert resumed.returncode == 0, (resumed.returncode, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr
    assert f"Resuming: {len(first)} candidates already finished" in stdout
    return first, output, store


def _check_nothing_lost_or_repeated(first: list[dict], output: Path) -> None:
    records = _records(output)
    names = [r["name"] for r in records]
    assert len(names) == len(set(names)), names  # nothing ran twice
    numbers = [r["trial_number"] for r in records if r["trial_number"] is not None]
    assert len(numbers) == len(set(numbers)), numbers
    assert records[: len(first)] == first  # the first run's records are kept as they were
    leaderboard = pd.read_csv(output / "leaderboard.csv")
    for record in first:
        if record["state"] == "complete":
            assert (leaderboard["candidate"] == record["name"]).sum() == 1, record["name"]
    assert any(r["family"] == "keras" for r in records[len(first) :]), "the resumed search ran no trial"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["interrupted"] is False


def _check_no_run_left_running(output: Path, store: str) -> None:
    import mlflow

    summary = json.loads((output / "summary.json").read_text())

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("kill-resume")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    running = [(r.info.run_name, r.info.status) for r in runs if r.info.status == "RUNNING"]
    assert not running, running
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert parents[0].info.run_id == summary["mlflow_run_id"]


def test_sigkill_between_candidates_then_resume(tmp_path):
    first, output, _ = _kill_and_resume(tmp_path, when="baselines", tracking=False)
    assert [r["name"] for r in first] == ["dummy", "linear"]
    _check_nothing_lost_or_repeated(first, output)


@pytest.mark.slow
def test_sigkill_during_a_trial_then_resume_leaves_no_mlflow_run_running(tmp_path):
    first, output, store = _kill_and_resume(tmp_path, when="trial", tracking=True)
    _check_nothing_lost_or_repeated(first, output)
    _check_no_run_left_running(output, store)


@pytest.mark.slow  # ~35 s; the kill during a trial of the first process stays in the default run
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker in /proc")
def test_sigkill_while_a_fresh_process_runs_the_trials_then_resume(tmp_path):
    first, output, _ = _kill_and_resume(tmp_path, when="handover", tracking=False)
    _check_nothing_lost_or_repeated(first, output)


def test_sigkill_during_a_trial_then_resume(tmp_path):
    # Used to end in an internal error: the killed trial was failed before its reason was set.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    first, output, _ = _kill_and_resume(tmp_path, when="trial", tracking=False)
    _check_nothing_lost_or_repeated(first, output)
    storage = JournalStorage(JournalFileBackend(str(output / "study.journal")))
    trials = optuna.load_study(study_name="autodl", storage=storage).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    killed = [t for t in trials if "killed" in t.user_attrs.get("reason", "")]
    assert [t.state for t in killed] == [optuna.trial.TrialState.FAIL]


def test_resume_relogs_candidates_a_kill_left_half_logged_or_unlogged(tmp_path):
    """A kill during a candidate's MLflow logging (its run RUNNING) or just before it (no run)."""
    import mlflow

    from autodl import search

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = dict(
        target="Survived",
        space="mlp_small",
        trials=1,
        time_limit=300,
        baselines=("dummy", "linear"),
        folds=2,
        max_epochs=3,
        capacity_check=False,
        tracking_uri=store,
        experiment="catch-up",
        output_dir=tmp_path / "run",
    )
    first = search(TITANIC, **options)
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("catch-up").experiment_id

    def children() -> dict[str, list]:
        found: dict[str, list] = {}
        for run in client.search_runs([experiment], max_results=1000):
            if "mlflow.parentRunId" in run.data.tags:
                found.setdefault(run.info.run_name, []).append(run)
        return found

    before = children()
    client.update_run(before["linear"][0].info.run_id, status="RUNNING")  # killed mid-logging
    client.delete_run(before["keras_trial_0"][0].info.run_id)  # killed before logging
    client.update_run(first.run_id, status="RUNNING")

    search(TITANIC, **options, resume=True)

    after = children()
    assert sorted(after) == sorted(before)
    assert all(len(runs) == 1 for runs in after.values()), {k: len(v) for k, v in after.items()}
    assert all(runs[0].info.status == "FINISHED" for runs in after.values())
    assert "cv_roc_auc" in after["linear"][0].data.metrics
    assert "cv_roc_auc" in after["keras_trial_0"][0].data.metrics
