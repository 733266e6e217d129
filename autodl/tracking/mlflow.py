"""MLflow tracking: one parent run per search, one nested run per baseline and per trial."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autodl.result import CandidateOutcome, SearchResult
from autodl.tracking.base import redact

MAX_PARAM_LENGTH = 6000
STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def resolve_tracking_uri(uri: str | None) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else MLflow's own default (a local SQLite file)."""
    import mlflow

    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


class MlflowTracker:
    """Logs through MlflowClient with explicit run ids; metrics are sent in batches."""

    def __init__(self, *, uri: str | None, experiment: str, run_name: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self._uri = resolve_tracking_uri(uri)
        mlflow.set_tracking_uri(self._uri)
        self._client = MlflowClient(self._uri)
        self._experiment = experiment
        self._run_name = run_name
        self._parent: str | None = None
        self._children: dict[str, str] = {}

    @property
    def run_id(self) -> str | None:
        return self._parent

    @property
    def uri(self) -> str:
        return self._uri

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self._experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self._client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self._client.create_experiment(self._experiment)

    def start(
        self,
        *,
        config: dict[str, Any],
        summary: dict[str, Any],
        data: pd.DataFrame,
        source: str,
        resume_run_id: str | None = None,
    ) -> None:
        import autodl

        if resume_run_id and self._reopen(resume_run_id):
            return
        run = self._client.create_run(
            self._experiment_id(),
            run_name=self._run_name,
            tags={
                "autodl.version": autodl.__version__,
                "autodl.role": "search",
                "autodl.task": summary["task"],
                "autodl.metric": summary["metric"],
                "autodl.search_space": str(config.get("space")),
                "autodl.tracking_uri": redact(self._uri) or "",
            },
        )
        self._parent = run.info.run_id
        params = {f"config.{k}": v for k, v in config.items() if v is not None and k != "extra"}
        params.update({f"data.{k}": v for k, v in summary.items() if not isinstance(v, dict | list)})
        self._log_params(self._parent, params)
        self._client.log_dict(self._parent, summary, "data_profile.json")
        self._log_dataset(data, source, summary)

    def _reopen(self, run_id: str) -> bool:
        """Continue the parent run of a resumed search; runs its killed process left RUNNING end KILLED."""
        from mlflow.exceptions import MlflowException

        try:
            parent = self._client.get_run(run_id)
        except MlflowException:
            return False  # not in this store: the resumed search gets a new parent run
        self._parent = run_id
        self._client.update_run(run_id, status="RUNNING")
        self._client.set_tag(run_id, "autodl.resumed", "true")
        children = self._client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            max_results=5000,
        )
        for child in children:
            self._children[child.info.run_name] = child.info.run_id
            if child.info.status == "RUNNING":
                self._client.set_terminated(child.info.run_id, "KILLED")
        return True

    def _log_dataset(self, data: pd.DataFrame, source: str, summary: dict[str, Any]) -> None:
        import mlflow

        try:
            dataset = mlflow.data.from_pandas(
                data, source=source, name=Path(source).name, targets=summary["target"]
            )
            self._client.log_inputs(
                self._parent, datasets=[mlflow.entities.DatasetInput(dataset._to_mlflow_entity())]
            )
        except Exception as error:  # the dataset record is an extra; its failure must not stop a search
            self._client.set_tag(self._parent, "autodl.dataset_logging_error", str(error)[:250])

    def log_candidate(self, outcome: CandidateOutcome, metric: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self._client.create_run(
            self._client.get_run(self._parent).info.experiment_id,
            run_name=outcome.name,
            tags={
                "mlflow.parentRunId": self._parent,
                "autodl.role": outcome.family,
                "autodl.state": outcome.state,
                **({"autodl.reason": outcome.reason[:5000]} if outcome.reason else {}),
                **(
                    {"autodl.trial_number": str(outcome.trial_number)}
                    if outcome.trial_number is not None
                    else {}
                ),
            },
        )
        run_id = run.info.run_id
        self._children[outcome.name] = run_id
        now = _millis()
        metrics = [Metric(f"fold_{metric}", float(s), now, i) for i, s in enumerate(outcome.fold_scores)]
        if outcome.state == "complete":
            metrics += [
                Metric(f"cv_{metric}", outcome.mean, now, 0),
                Metric(f"cv_{metric}_std", outcome.std, now, 0),
            ]
        metrics.append(Metric("fit_seconds", float(outcome.fit_seconds), now, 0))
        if outcome.n_parameters is not None:
            metrics.append(Metric("n_parameters", float(outcome.n_parameters), now, 0))
        for fold_index, detail in enumerate(outcome.fold_details):
            for key, values in detail.get("history", {}).items():
                metrics += [
                    Metric(f"fold{fold_index}_{key}", float(v), now, step)
                    for step, v in enumerate(values)
                    if np.isfinite(v)
                ]
        params = [Param(k, _param_text(v)) for k, v in outcome.params.items()]
        for start in range(0, max(len(metrics), 1), 1000):
            self._client.log_batch(
                run_id,
                metrics=metrics[start : start + 1000],
                params=params if start == 0 else [],
                tags=[RunTag("autodl.family", outcome.family)],
            )
        self._client.set_terminated(run_id, STATUS[outcome.state])

    def finish(self, result: SearchResult, *, input_example: pd.DataFrame, model_dir: Path) -> None:
        from mlflow.entities import Metric

        now = _millis()
        metrics = [Metric(f"test_{k}", float(v), now, 0) for k, v in result.test_scores.items()]
        metrics.append(Metric(f"cv_{result.metric}", float(result.cv_score), now, 0))
        self._client.log_batch(self._parent, metrics=metrics)
        self._client.set_tag(self._parent, "autodl.final_model", result.final_name)
        self._client.set_tag(self._parent, "autodl.interrupted", str(result.interrupted).lower())
        leaderboard = result.leaderboard
        self._client.log_table(self._parent, data=leaderboard, artifact_file="leaderboard.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "leaderboard.csv"
            leaderboard.to_csv(path, index=False)
            self._client.log_artifact(self._parent, str(path))
        if len(leaderboard):
            best = self._children.get(leaderboard.iloc[0]["candidate"])
            if best:
                self._client.set_tag(best, "autodl.best", "true")
        self._log_model(result, input_example, model_dir)
        self._client.set_terminated(self._parent, "KILLED" if result.interrupted else "FINISHED")

    def _log_model(self, result: SearchResult, input_example: pd.DataFrame, model_dir: Path) -> None:
        import mlflow

        from autodl.serve import log_pyfunc_model

        with mlflow.start_run(run_id=self._parent):
            info = log_pyfunc_model(model_dir, input_example)
        self._client.set_tag(self._parent, "autodl.model_uri", info.model_uri)
        result.decisions["mlflow_model_uri"] = info.model_uri

    def abort(self, status: str, reason: str) -> None:
        if self._parent is None:
            return
        self._client.set_tag(self._parent, "autodl.stop_reason", reason[:5000])
        self._client.set_terminated(self._parent, status)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(run_id, params=items[start : start + 100])


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def _millis() -> int:
    import time

    return int(time.time() * 1000)
