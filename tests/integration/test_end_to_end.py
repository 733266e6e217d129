"""End to end: the real CLI in a subprocess, MLflow records, the pyfunc, the Python API, determinism.

The CLI search on titanic runs once per module (about 40 s on two cores) and several tests read
what it left behind: the output folder, the MLflow store, the logged model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import autodl
from autodl import AutoDLClassifier, cli
from autodl.model import TabularModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
N_TRIALS = 2
N_FOLDS = 2
MAX_EPOCHS = 3


def _env(store: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "COLUMNS": "200",
    }
    if store:
        env["MLFLOW_TRACKING_URI"] = store
    return env


def _cli(*args: str, cwd: Path, store: str, timeout: int = 400) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "autodl.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(store),
        timeout=timeout,
    )
    done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
    return done


@dataclass
class CliRun:
    output: Path
    store: str
    done: subprocess.CompletedProcess
    work: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.output / "summary.json").read_text())

    @property
    def leaderboard(self) -> pd.DataFrame:
        return pd.read_csv(self.output / "leaderboard.csv")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> CliRun:
    """`autodl search` on titanic, run once for the module in a subprocess."""
    work = tmp_path_factory.mktemp("cli")
    store = f"sqlite:///{work / 'mlflow.db'}"
    output = work / "run"
    done = _cli(
        "search",
        str(EXAMPLES / "titanic.csv"),
        "--target",
        "Survived",
        "--trials",
        str(N_TRIALS),
        "--folds",
        str(N_FOLDS),
        "--space",
        "mlp_small",
        "--max-epochs",
        str(MAX_EPOCHS),
        "--time-limit",
        "300",
        "--seed",
        "0",
        "--output",
        str(output),
        cwd=work,
        store=store,
    )
    return CliRun(output, store, done, work)


@pytest.fixture
def use_store():
    """Point MLflow's process-wide tracking URI at a store for one test, then clear it again."""
    import mlflow

    def use(store: str) -> None:
        mlflow.set_tracking_uri(store)

    yield use
    mlflow.set_tracking_uri(None)  # unsets it; the isolation fixture then restores the environment


def _raw_rows() -> pd.DataFrame:
    """Raw titanic rows as a user would read them: some with missing Age and Cabin; no target."""
    frame = pd.read_csv(EXAMPLES / "titanic.csv")
    missing = frame[frame["Age"].isna() & frame["Cabin"].isna()].head(3)
    complete = frame[frame["Age"].notna() & frame["Cabin"].notna()].head(2)
    return pd.concat([missing, complete]).drop(columns=["Survived"])


def _check_prediction_frame(out: pd.DataFrame, n_rows: int) -> None:
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"], out.columns
    assert len(out) == n_rows
    proba = out[["proba_0", "proba_1"]].to_numpy(dtype=float)
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    expected = np.where(proba[:, 1] > proba[:, 0], 1, 0)
    assert [int(p) for p in out["prediction"]] == expected.tolist()


# --------------------------------------------------------------------------- 1a: the CLI


def test_cli_search_exits_cleanly_and_writes_its_outputs(cli_run):
    done = cli_run.done
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "Traceback" not in done.stdout and "Traceback" not in done.stderr, done.stderr[-3000:]
    for name in ("leaderboard.csv", "summary.json", "study.journal", "model/autodl-model.json"):
        assert (cli_run.output / name).is_file(), name

    board = cli_run.leaderboard
    assert {"rank", "candidate", "family", "cv_roc_auc", "cv_std", "folds"} <= set(board.columns)
    baselines = board[board["family"] == "baseline"]
    assert {"dummy", "linear", "hist_gradient_boosting"} <= set(baselines["candidate"])
    keras = board[board["candidate"].str.startswith("keras_trial_")]
    assert len(keras) >= 1 and set(keras["family"]) == {"keras"}
    assert (board["folds"] == N_FOLDS).all()
    assert board["cv_roc_auc"].is_monotonic_decreasing

    summary = cli_run.summary
    assert 0.6 < summary["test_scores"]["roc_auc"] <= 1.0
    assert np.isfinite(summary["cv_score"]) and 0.6 < summary["cv_score"] <= 1.0
    assert summary["summary"]["task"] == "binary" and summary["summary"]["metric"] == "roc_auc"
    assert summary["mlflow_run_id"]
    trials = [o for o in summary["outcomes"] if o["family"] == "keras"]
    assert len(trials) == N_TRIALS


def test_cli_search_logs_one_parent_run_with_nested_candidate_runs(cli_run):
    from mlflow import MlflowClient

    assert cli_run.done.returncode == 0, cli_run.done.stderr[-3000:]
    client = MlflowClient(cli_run.store)
    experiment = client.get_experiment_by_name("autodl")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("autodl.role") == "search"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    summary = cli_run.summary
    assert parent.info.run_id == summary["mlflow_run_id"]
    assert parent.info.status == "FINISHED"

    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == len(runs) - 1, "every other run is nested under the search"
    names = sorted(r.info.run_name for r in nested)
    assert names == sorted(o["name"] for o in summary["outcomes"])
    n_baselines = sum(o["family"] == "baseline" for o in summary["outcomes"])
    assert len(nested) == n_baselines + N_TRIALS

    states = {o["name"]: o["state"] for o in summary["outcomes"]}
    for run in nested:
        assert run.info.status == "FINISHED", run.info.run_name
        # A baseline may be skipped ("pruned") on a loaded machine once baselines spent their share.
        assert run.data.tags["autodl.state"] == states[run.info.run_name]
        if states[run.info.run_name] == "complete":
            assert len(client.get_metric_history(run.info.run_id, "fold_roc_auc")) == N_FOLDS
            assert "cv_roc_auc" in run.data.metrics
    keras_runs = [r for r in nested if r.data.tags.get("autodl.role") == "keras"]
    assert len(keras_runs) == N_TRIALS
    assert all(r.data.tags["autodl.state"] == "complete" for r in keras_runs)
    for run in keras_runs:
        for fold in range(N_FOLDS):
            for curve in (f"fold{fold}_loss", f"fold{fold}_val_loss"):
                assert curve in run.data.metrics, (run.info.run_name, sorted(run.data.metrics))
                history = client.get_metric_history(run.info.run_id, curve)
                assert 1 <= len(history) <= MAX_EPOCHS
                assert sorted(m.step for m in history) == list(range(len(history)))
        assert run.data.params, "trial parameters are logged"

    metrics = parent.data.metrics
    assert metrics["test_roc_auc"] == pytest.approx(summary["test_scores"]["roc_auc"])
    assert metrics["cv_roc_auc"] == pytest.approx(summary["cv_score"])
    assert parent.data.tags["autodl.model_uri"].startswith("models:/")


def test_pyfunc_predicts_raw_rows_as_read_by_pandas(cli_run, use_store):
    """Integer columns arrive as int64 from read_csv; the signature must accept them (not only doubles)."""
    import mlflow

    assert cli_run.done.returncode == 0, cli_run.done.stderr[-3000:]
    rows = _raw_rows()
    assert rows["Pclass"].dtype == np.int64  # exactly what pandas.read_csv gives
    use_store(cli_run.store)
    uri = (
        mlflow.MlflowClient(cli_run.store)
        .get_run(cli_run.summary["mlflow_run_id"])
        .data.tags["autodl.model_uri"]
    )
    out = pd.DataFrame(mlflow.pyfunc.load_model(uri).predict(rows))
    _check_prediction_frame(out, len(rows))


def test_pyfunc_predicts_rows_with_missing_values(cli_run, use_store):
    """Rows where integer columns hold a missing value (so pandas reads them as floats)."""
    import mlflow

    assert cli_run.done.returncode == 0, cli_run.done.stderr[-3000:]
    rows = _raw_rows()
    rows.iloc[0, rows.columns.get_loc("SibSp")] = np.nan  # SibSp becomes float, as in a CSV with a gap
    rows = rows.astype({"PassengerId": float, "Pclass": float, "Parch": float})
    use_store(cli_run.store)
    uri = (
        mlflow.MlflowClient(cli_run.store)
        .get_run(cli_run.summary["mlflow_run_id"])
        .data.tags["autodl.model_uri"]
    )
    out = pd.DataFrame(mlflow.pyfunc.load_model(uri).predict(rows))
    _check_prediction_frame(out, len(rows))
    local = TabularModel.load(cli_run.output / "model").predict_frame(rows)
    np.testing.assert_allclose(
        out[["proba_0", "proba_1"]].to_numpy(float), local[["proba_0", "proba_1"]].to_numpy(float), atol=1e-6
    )


def test_cli_predict_writes_predictions_for_raw_rows(cli_run, tmp_path, monkeypatch, capsys):
    assert cli_run.done.returncode == 0, cli_run.done.stderr[-3000:]
    rows = _raw_rows()
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    out_path = tmp_path / "out.csv"

    done = _cli(
        "predict",
        str(cli_run.output / "model"),
        str(data),
        "-o",
        str(out_path),
        cwd=tmp_path,
        store=cli_run.store,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    written = pd.read_csv(out_path)
    _check_prediction_frame(written, len(rows))
    expected = TabularModel.load(cli_run.output / "model").predict_frame(pd.read_csv(data))
    np.testing.assert_allclose(
        written[["proba_0", "proba_1"]].to_numpy(float),
        expected[["proba_0", "proba_1"]].to_numpy(float),
        atol=1e-6,
    )

    # The same rows through the MLflow model URI (in-process: TensorFlow is already loaded here).
    uri = cli_run.summary["mlflow_run_id"]
    from mlflow import MlflowClient

    model_uri = MlflowClient(cli_run.store).get_run(uri).data.tags["autodl.model_uri"]
    by_uri = tmp_path / "by_uri.csv"
    monkeypatch.setattr(
        sys,
        "argv",
        ["autodl", "predict", model_uri, str(data), "-o", str(by_uri), "--tracking-uri", cli_run.store],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cli.main()  # success returns normally
        except SystemExit as exit_:
            assert exit_.code in (0, None), capsys.readouterr().err
    np.testing.assert_allclose(
        pd.read_csv(by_uri)[["proba_0", "proba_1"]].to_numpy(float),
        written[["proba_0", "proba_1"]].to_numpy(float),
        atol=1e-6,
    )


# --------------------------------------------------------------------------- 1b: the Python API


def test_public_search_name_is_the_function(tmp_path):
    """`from autodl import search` (the README's example) gives the function, not a subpackage.

    A subpackage named like the function would rebind `autodl.search` to itself as soon as
    anything imported it; a fresh interpreter shows what a user gets.
    """
    code = (
        "import autodl\n"
        "from autodl import AutoDLClassifier, AutoDLRegressor, search\n"
        "assert callable(search), search\n"
        "assert callable(autodl.search), autodl.search\n"
        "assert search is autodl.api.search\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _with_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """A few rows with missing numbers and categories and a category never seen in training."""
    rows = frame.head(6).copy()
    rows.loc[rows.index[0], "age"] = np.nan
    rows.loc[rows.index[1], "education"] = np.nan
    rows.loc[rows.index[2], "race"] = "9. Never seen"
    rows.loc[rows.index[3], rows.columns] = np.nan
    return rows


def test_api_search_regression_on_wage(wage_csv, tmp_path):
    result = autodl.search(
        wage_csv,
        target="wage",
        trials=1,
        folds=2,
        space="mlp_small",
        max_epochs=2,
        time_limit=300,
        tracking=False,
        output_dir=tmp_path / "w",
    )
    assert result.task == "regression" and result.metric == "rmse"
    assert result.run_id is None
    board = result.leaderboard
    assert len(board) > 0 and "cv_rmse" in board.columns
    assert board["cv_rmse"].is_monotonic_increasing  # lower is better
    assert "hist_gradient_boosting_poisson" in set(board["candidate"])  # wages are never negative
    assert {"rmse", "r2", "mae"} <= set(result.test_scores)
    assert all(np.isfinite(v) for v in result.test_scores.values())
    assert result.test_scores["r2"] > 0.1  # wage is learnable from age and education
    assert (result.output_dir / "leaderboard.csv").is_file() and (
        result.output_dir / "summary.json"
    ).is_file()

    raw = _with_gaps(pd.read_csv(wage_csv).drop(columns=["wage"]))
    loaded = autodl.load_model(result.model_dir)
    expected = result.model.predict(raw)
    assert expected.shape == (len(raw),) and np.all(np.isfinite(expected))
    np.testing.assert_allclose(loaded.predict(raw), expected, rtol=1e-6, atol=1e-6)


def test_classifier_on_penguins_returns_string_labels(penguins_csv, tmp_path):
    frame = pd.read_csv(penguins_csv)
    X, y = frame.drop(columns=["species"]), frame["species"]
    assert X.isna().any().any()  # penguins has rows with missing measurements

    clf = AutoDLClassifier(time_limit=120, trials=1, folds=2, space="mlp_small", output_dir=tmp_path / "p")
    assert clf.fit(X, y) is clf
    species = sorted(y.unique())
    assert list(clf.classes_) == species

    labels = clf.predict(X)
    assert len(labels) == len(X)
    assert set(labels) <= set(species)
    assert all(isinstance(label, str) for label in labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(clf.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert list(np.asarray(clf.classes_)[proba.argmax(axis=1)]) == list(labels)
    assert np.mean(labels == y.to_numpy()) > 0.9  # fold models averaged, on rows they mostly saw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"], "everything went to output_dir"


# --------------------------------------------------------------------------- 1d: determinism


def _search_like_the_cli(titanic_csv, output_dir, max_epochs=MAX_EPOCHS):
    return autodl.search(
        titanic_csv,
        target="Survived",
        trials=N_TRIALS,
        folds=N_FOLDS,
        space="mlp_small",
        max_epochs=max_epochs,
        time_limit=300,
        tracking=False,
        seed=0,
        output_dir=output_dir,
    )


def _assert_same_outcomes(first: list[dict], second: list[dict]) -> None:
    assert [(o["name"], o["state"]) for o in first] == [(o["name"], o["state"]) for o in second]
    assert sum(o["name"].startswith("keras_trial_") for o in first) == N_TRIALS
    for a, b in zip(first, second, strict=True):
        assert a["params"] == b["params"], a["name"]
        np.testing.assert_allclose(a["fold_scores"], b["fold_scores"], rtol=0, atol=1e-9, err_msg=a["name"])


def _outcomes(result) -> list[dict]:
    return [
        {"name": o.name, "state": o.state, "params": o.params, "fold_scores": o.fold_scores}
        for o in result.outcomes
    ]


@pytest.mark.slow  # one more search (about 15 s quiet, 30 s on a shared machine)
def test_same_seed_gives_the_same_leaderboard_across_processes(cli_run, titanic_csv, tmp_path):
    """The Python API in this process repeats the CLI's search (another process) score for score."""
    assert cli_run.done.returncode == 0, cli_run.done.stderr[-3000:]
    result = _search_like_the_cli(titanic_csv, tmp_path / "again")
    summary = cli_run.summary
    if any(o["state"] != "complete" for o in summary["outcomes"]):
        pytest.skip("the CLI run skipped a baseline for time (a loaded machine); nothing to compare")
    _assert_same_outcomes(summary["outcomes"], _outcomes(result))
    board, cli_board = result.leaderboard, cli_run.leaderboard
    assert list(board["candidate"]) == list(cli_board["candidate"])
    np.testing.assert_allclose(board["cv_roc_auc"], cli_board["cv_roc_auc"], rtol=0, atol=1e-9)
    assert result.final_members == pytest.approx(summary["final_members"])
    assert result.cv_score == pytest.approx(summary["cv_score"], abs=1e-9)
    assert result.test_scores == pytest.approx(summary["test_scores"], abs=1e-9)


@pytest.mark.slow  # two searches
def test_same_seed_gives_the_same_leaderboard_in_one_process(titanic_csv, tmp_path):
    first = _search_like_the_cli(titanic_csv, tmp_path / "a", max_epochs=2)
    second = _search_like_the_cli(titanic_csv, tmp_path / "b", max_epochs=2)
    _assert_same_outcomes(_outcomes(first), _outcomes(second))
    a, b = first.leaderboard, second.leaderboard
    assert list(a["candidate"]) == list(b["candidate"])
    np.testing.assert_allclose(a["cv_roc_auc"], b["cv_roc_auc"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["cv_std"], b["cv_std"], rtol=0, atol=1e-9)
    assert first.final_members == pytest.approx(second.final_members)
    assert first.test_scores == pytest.approx(second.test_scores, abs=1e-9)
