"""A real MLflow tracking server over HTTP: a small search logs to it, and everything a reviewer
needs is read back through the MLflow client (parent run, every nested run, metrics, artifacts,
plots, the model and its registered version), then the model is loaded by URI and predicts.

The server (`mlflow server`, SQLite backend, proxied artifacts in a temporary folder) and the
search run once per module.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
TITANIC = REPO / "examples" / "data" / "titanic.csv"
BASELINES = ("dummy", "linear", "hist_gradient_boosting")
N_TRIALS, N_FOLDS = 2, 2
REGISTERED = "autodl-server-test"
CLASSIFICATION_PLOTS = (
    "optimization_history",
    "param_importances",
    "learning_curves",
    "confusion_matrix",
    "roc_curve",
    "pr_curve",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: the venv's scripts (uvicorn) on PATH, the repo importable."""
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """End the server and its workers (its own process group), politely then firmly."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)  # a graceful shutdown waits for idle keep-alive connections
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """`mlflow server` on a free loopback port with a temporary SQLite store; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'backend.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no GenAI job workers
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", process, log, timeout=120)
        yield url
    finally:
        stop(process)


@dataclass
class Searched:
    url: str
    result: object
    seconds: float


@pytest.fixture(scope="module")
def searched(server, tmp_path_factory) -> Searched:
    """A small search on titanic logged to the server over HTTP, with --register-model."""
    import mlflow

    from autodl.api import search

    output = tmp_path_factory.mktemp("search") / "out"
    started = time.perf_counter()
    try:
        result = search(
            TITANIC,
            target="Survived",
            trials=N_TRIALS,
            folds=N_FOLDS,
            space="mlp_small",
            max_epochs=2,
            time_limit=600,
            capacity_check=False,  # a check of the space, not of what these tests review
            baselines=BASELINES,
            output_dir=output,
            tracking_uri=server,
            experiment="server-test",
            register_model=REGISTERED,
        )
    finally:
        mlflow.set_tracking_uri(None)  # the tracker sets it process-wide; the isolation fixture owns it
    return Searched(server, result, time.perf_counter() - started)


@pytest.fixture
def client(searched):
    from mlflow import MlflowClient

    return MlflowClient(searched.url)


@pytest.fixture
def use_server(searched, monkeypatch):
    """Point MLflow's process-wide tracking URI at the server for one test."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", searched.url)
    mlflow.set_tracking_uri(searched.url)
    yield searched.url
    mlflow.set_tracking_uri(None)


def runs_of(client, result):
    parent = client.get_run(result.run_id)
    nested = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=1000,
    )
    return parent, nested


def raw_rows() -> pd.DataFrame:
    """Rows as pandas reads them from a CSV: int64 columns, missing ages, an all-empty Cabin column."""
    frame = pd.read_csv(TITANIC)
    rows = frame[frame["Cabin"].isna()].head(4).drop(columns=["Survived"]).reset_index(drop=True)
    rows = pd.read_csv(io.StringIO(rows.to_csv(index=False)))
    assert rows["Pclass"].dtype == np.int64 and rows["Cabin"].isna().all()
    return rows


def check_predictions(out: pd.DataFrame, n_rows: int) -> None:
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"], out.columns
    assert len(out) == n_rows
    proba = out[["proba_0", "proba_1"]].to_numpy(dtype=float)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert [int(p) for p in out["prediction"]] == proba.argmax(axis=1).tolist()


# --------------------------------------------------------------------------------------------------


def test_parent_run_records_the_search(searched, client):
    result = searched.result
    parent, _ = runs_of(client, result)
    assert parent.info.status == "FINISHED"
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["autodl.role"] == "search"
    assert tags["autodl.task"] == "binary" and tags["autodl.metric"] == "roc_auc"
    assert tags["autodl.search_space"] == "mlp_small"
    assert tags["autodl.version"] and tags["autodl.final_model"] == result.final_name
    assert tags["autodl.stop_reason"] == result.decisions["stop_reason"]
    assert tags["autodl.model_uri"].startswith("models:/")
    assert params["config.folds"] == str(N_FOLDS) and params["config.space"] == "mlp_small"
    assert params["data.target"] == "Survived" and params["data.task"] == "binary"
    assert "stratified 2-fold CV" in params["protocol.cv"]
    assert "test split of 20%" in params["protocol.holdout"]
    # the test score next to the CV estimate, for every metric scored
    assert metrics["cv_roc_auc"] == pytest.approx(result.cv_score)
    assert metrics["test_roc_auc"] == pytest.approx(result.test_scores["roc_auc"])
    for name in result.test_scores:
        assert f"cv_{name}" in metrics and f"test_{name}" in metrics, name
    assert metrics["n_candidates"] == len(result.outcomes) == len(BASELINES) + N_TRIALS
    assert metrics["plots_seconds"] < 10
    datasets = parent.inputs.dataset_inputs
    assert len(datasets) == 1 and datasets[0].dataset.digest
    assert "Survived" in datasets[0].dataset.schema


def test_every_candidate_has_a_nested_run(searched, client):
    result = searched.result
    parent, nested = runs_of(client, result)
    assert sorted(r.info.run_name for r in nested) == sorted(o.name for o in result.outcomes)
    assert len(nested) == len(BASELINES) + N_TRIALS
    outcomes = {o.name: o for o in result.outcomes}
    for run in nested:
        outcome = outcomes[run.info.run_name]
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.status in ("FINISHED", "FAILED"), run.info.run_name
        assert tags["autodl.state"] == outcome.state and tags["autodl.role"] == outcome.family
        assert "fit_seconds" in metrics
        assert run.info.end_time - run.info.start_time >= int(outcome.fit_seconds * 1000) - 5
        if outcome.state != "complete":
            assert tags["autodl.reason"], run.info.run_name
            continue
        history = client.get_metric_history(run.info.run_id, "fold_roc_auc")
        assert sorted(m.step for m in history) == list(range(N_FOLDS))
        assert metrics["cv_roc_auc"] == pytest.approx(outcome.mean)
        assert metrics["cv_roc_auc_std"] == pytest.approx(outcome.std)
        if outcome.family == "keras":
            assert tags["autodl.trial_number"] == str(outcome.trial_number)
            assert metrics["n_parameters"] > 0
            assert {"n_layers", "units_0", "learning_rate"} <= set(run.data.params)
            for fold in range(N_FOLDS):
                curve = client.get_metric_history(run.info.run_id, f"fold{fold}_val_loss")
                assert sorted(m.step for m in curve) == list(range(len(curve))) and curve
            epochs = client.get_metric_history(run.info.run_id, "fold_best_epoch")
            assert len(epochs) == N_FOLDS
    keras_runs = [r for r in nested if r.data.tags["autodl.role"] == "keras"]
    assert len(keras_runs) == N_TRIALS

    best = [r for r in nested if r.data.tags.get("autodl.best") == "true"]
    assert len(best) == 1
    assert best[0].info.run_name == result.leaderboard.iloc[0]["candidate"]
    assert parent.data.tags["autodl.best_run_id"] == best[0].info.run_id
    assert best[0].data.tags["mlflow.note.content"].startswith("Best candidate")
    best_plots = {Path(a.path).stem for a in client.list_artifacts(best[0].info.run_id, "plots")}
    keras_best = best[0].data.tags["autodl.role"] == "keras"
    assert best_plots == {"fold_scores", *(["learning_curves"] if keras_best else [])}


def test_parent_run_artifacts_include_plots_and_reports(searched, client, tmp_path):
    result = searched.result
    parent, _ = runs_of(client, result)
    run_id = parent.info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    expected = {
        "data_profile.json",
        "protocol.json",
        "decisions.json",
        "leaderboard.csv",
        "leaderboard.json",
        "search_space.yaml",
        "plots",
    }
    assert expected <= top, top
    plots = {Path(a.path).stem: a for a in client.list_artifacts(run_id, "plots")}
    assert set(plots) == set(CLASSIFICATION_PLOTS), sorted(plots)
    assert not [k for k in parent.data.tags if k.startswith("autodl.plot_skipped")]
    for artifact in plots.values():
        assert 2_000 < artifact.file_size < 150_000, (artifact.path, artifact.file_size)
    png = Path(client.download_artifacts(run_id, "plots/roc_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    decisions = json.loads(
        Path(client.download_artifacts(run_id, "decisions.json", str(tmp_path))).read_text()
    )
    assert decisions["stop_reason"] == result.decisions["stop_reason"]
    assert decisions["final_members"] == pytest.approx(result.final_members)
    protocol = json.loads(Path(client.download_artifacts(run_id, "protocol.json", str(tmp_path))).read_text())
    assert protocol["cross_validation"]["folds"] == N_FOLDS and protocol["holdout"]["test_rows"] > 0
    board = pd.read_csv(client.download_artifacts(run_id, "leaderboard.csv", str(tmp_path)))
    assert board["candidate"].tolist() == result.leaderboard["candidate"].tolist()

    keras_members = [name for name in result.final_members if name.startswith("keras_trial_")]
    if keras_members:  # the native .keras fold networks of the final model's Keras members
        files = {a.path for a in client.list_artifacts(run_id, f"keras_models/{keras_members[0]}")}
        assert files == {f"keras_models/{keras_members[0]}/fold_{i}.keras" for i in range(N_FOLDS)}
    else:
        assert "keras_models" not in top


def test_logged_model_loads_by_uri_and_predicts_raw_rows(searched, client, use_server):
    import mlflow

    parent, _ = runs_of(client, searched.result)
    rows = raw_rows()
    model_uri = parent.data.tags["autodl.model_uri"]
    for uri in (model_uri, f"runs:/{parent.info.run_id}/model", f"models:/{REGISTERED}/1"):
        out = pd.DataFrame(mlflow.pyfunc.load_model(uri).predict(rows))
        check_predictions(out, len(rows))
    # the same probabilities as the final model in memory
    expected = searched.result.model.predict_frame(rows)
    np.testing.assert_allclose(out["proba_1"], expected["proba_1"], atol=1e-5)

    assert parent.data.tags["autodl.registered_model"] == REGISTERED
    assert parent.data.tags["autodl.registered_version"] == "1"
    version = client.get_model_version(REGISTERED, "1")
    assert version.tags["autodl.run_id"] == parent.info.run_id
    assert searched.result.decisions["registered_model"]["uri"] == f"models:/{REGISTERED}/1"
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    assert {c.name for c in info.signature.inputs.inputs} == set(rows.columns)


def test_predicting_by_uri_from_a_server_leaves_no_copy_of_the_model_behind(
    searched, use_server, tmp_path, monkeypatch
):
    """`autodl predict models:/...` downloads the model from the server: MLflow puts it in a new
    temporary folder that it never removes (a copy of every fold model per prediction)."""
    from mlflow.utils import requirements_utils

    from autodl import serve

    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    # MLflow's check of the model's pins on load needs no scan of every installed package (~1.4 s)
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    scans = []
    scan = requirements_utils.importlib_metadata.packages_distributions
    monkeypatch.setattr(
        requirements_utils.importlib_metadata, "packages_distributions", lambda: scans.append(1) or scan()
    )
    rows = raw_rows()
    check_predictions(serve.load_predictor(f"models:/{REGISTERED}/1")(rows), len(rows))
    assert not list(temporary.rglob("MLmodel")), "a downloaded copy of the model was left behind"
    assert scans == []


def test_mlflow_models_predict_cli_on_the_registered_model(searched, tmp_path):
    rows_csv, out_json = tmp_path / "rows.csv", tmp_path / "predictions.json"
    raw_rows().to_csv(rows_csv, index=False)
    command = [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{REGISTERED}/1"]
    command += ["-i", str(rows_csv), "-t", "csv", "--env-manager", "local", "-o", str(out_json)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env=child_env(MLFLOW_TRACKING_URI=searched.url),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.DataFrame(json.loads(out_json.read_text())["predictions"])
    check_predictions(out, 4)


def test_autodl_runs_lists_the_search_without_importing_tensorflow(searched):
    script = (
        "import sys\n"
        "from autodl import cli\n"
        f"sys.argv = ['autodl', 'runs', '--tracking-uri', {searched.url!r}, '--experiment', 'server-test']\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(COLUMNS="250"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = searched.result
    assert "tensorflow imported: False" in done.stdout
    assert result.run_id in done.stdout and "FINISHED" in done.stdout
    assert f"{result.cv_score:.4f}" in done.stdout and f"{result.test_score:.4f}" in done.stdout

    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "autodl.cli",
            "leaderboard",
            "--tracking-uri",
            searched.url,
            "--experiment",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(COLUMNS="250"),
    )
    assert missing.returncode == 2 and "no experiment named 'nope'" in missing.stderr, missing.stderr


def test_a_failure_while_finishing_ends_the_run_failed_with_the_reason(searched, client, tmp_path):
    """finish() that cannot log the model ends the parent run FAILED with why, and re-raises."""
    import mlflow

    from autodl.result import CandidateOutcome, SearchResult
    from autodl.tracking.mlflow import MlflowTracker

    tracker = MlflowTracker(uri=searched.url, experiment="server-test-failures", run_name="broken")
    summary = {"task": "binary", "metric": "roc_auc", "target": "y", "rows": 4, "columns": 2}
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    try:
        tracker.start(
            config={"space": "mlp_small", "folds": 2, "test_size": 0.0},
            summary=summary,
            data=frame,
            source="frame",
        )
        tracker.log_candidate(
            CandidateOutcome("linear", "baseline", {"C": 1.0}, "complete", "", [0.7, 0.8], 0.1), "roc_auc"
        )
        result = SearchResult(
            task="binary",
            metric="roc_auc",
            greater_is_better=True,
            outcomes=[CandidateOutcome("linear", "baseline", {"C": 1.0}, "complete", "", [0.7, 0.8], 0.1)],
            final_name="linear",
            final_members={"linear": 1.0},
            cv_score=0.75,
            test_scores={},
            output_dir=tmp_path,
            model_dir=tmp_path / "no-model-here",
            decisions={"stop_reason": "budget spent"},
            cv_evaluation={
                "y_true": np.array([0, 1, 0, 1]),
                "scores": np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]]),
            },
        )
        with pytest.raises(Exception, match="autodl model folder"):
            tracker.finish(result, input_example=frame[["x"]], model_dir=result.model_dir)
    finally:
        mlflow.set_tracking_uri(None)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert "logging the finished search failed" in run.data.tags["autodl.stop_reason"]
    # plots still logged before the failure; those that need a study or Keras trials say why not
    assert "no Optuna study" in run.data.tags["autodl.plot_skipped.optimization_history"]
    assert "autodl.plot_skipped.learning_curves" in run.data.tags
    assert {Path(a.path).stem for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "confusion_matrix",
        "roc_curve",
        "pr_curve",
    }
    tracker.abort("KILLED", "too late")  # a second ending is ignored
    assert client.get_run(tracker.run_id).info.status == "FAILED"
