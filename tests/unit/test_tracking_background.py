"""Candidates are logged to MLflow in the background, in order, and a failure still surfaces."""

from __future__ import annotations

import threading

import mlflow
import pandas as pd
import pytest

from autodl.result import CandidateOutcome
from autodl.tracking.mlflow import MlflowTracker

SUMMARY = {"task": "binary", "metric": "roc_auc", "target": "y", "rows": 4, "columns": 2}


def _started(tmp_path) -> MlflowTracker:
    tracker = MlflowTracker(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="background", run_name="bg")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    tracker.start(config={"folds": 2, "test_size": 0.0}, summary=SUMMARY, data=frame, source="frame")
    return tracker


def _outcome(name: str) -> CandidateOutcome:
    return CandidateOutcome(name, "baseline", {"C": 1.0}, "complete", "", [0.7, 0.8], 0.1)


def test_logging_a_candidate_does_not_wait_for_the_store_and_ending_waits_for_it(tmp_path, monkeypatch):
    tracker = _started(tmp_path)
    release = threading.Event()
    real = MlflowTracker._log_candidate

    def slow_store(self, outcome, metric):
        assert release.wait(timeout=10), "log_candidate waited for the store"
        real(self, outcome, metric)

    monkeypatch.setattr(MlflowTracker, "_log_candidate", slow_store)
    tracker.log_candidate(_outcome("first"), "roc_auc")  # returns while the store is blocked
    tracker.log_candidate(_outcome("second"), "roc_auc")
    release.set()
    tracker.abort("KILLED", "test over")  # waits for both before ending the parent run

    client = mlflow.MlflowClient(tracker.uri)
    children = client.search_runs(
        [client.get_run(tracker.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    assert sorted(run.info.run_name for run in children) == ["first", "second"]
    assert all(run.info.status == "FINISHED" for run in children)
    assert client.get_run(tracker.run_id).data.params["data.rows"] == "4"  # the inputs, queued first
    assert client.get_run(tracker.run_id).info.status == "KILLED"


def test_a_failed_logging_call_is_raised_at_the_next_call(tmp_path, monkeypatch):
    tracker = _started(tmp_path)

    def broken_store(self, outcome, metric):
        raise RuntimeError(f"store refused {outcome.name}")

    monkeypatch.setattr(MlflowTracker, "_log_candidate", broken_store)
    tracker.log_candidate(_outcome("first"), "roc_auc")
    tracker._pending[-1].exception()  # let the failure happen before the next call
    with pytest.raises(RuntimeError, match="store refused first"):
        tracker.log_candidate(_outcome("second"), "roc_auc")
    tracker.abort("FAILED", "the store failed")  # "second" failed too: logged as a warning, not raised
    run = mlflow.MlflowClient(tracker.uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["autodl.stop_reason"] == "the store failed"


def test_mlflow_dataset_hints_raised_in_another_thread_stay_off_the_terminal(tmp_path):
    import warnings

    MlflowTracker(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="hints", run_name="h")
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)  # after the tracker's filters: they decide

        def hint() -> None:
            warnings.warn(
                "Hint: Inferred schema contains integer column(s). Integer columns ...",
                UserWarning,
                stacklevel=2,
            )

        thread = threading.Thread(target=hint)
        thread.start()
        thread.join()
        warnings.warn("an unrelated warning", UserWarning, stacklevel=2)
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
