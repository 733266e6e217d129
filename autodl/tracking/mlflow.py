"""MLflow tracking: one parent run per search, one nested run per baseline and per trial."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autodl.errors import ConfigError
from autodl.result import CandidateOutcome, SearchResult
from autodl.tracking import store_seed
from autodl.tracking.base import redact

PROBE_SECONDS = 10
MAX_PARAM_LENGTH = 6000
STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def resolve_tracking_uri(uri: str | None) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else MLflow's own default (a local SQLite file)."""
    import mlflow

    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


# MLflow's hints about a dataset's source and integer columns, silenced for the whole process
# by each tracker: the dataset is logged in a background thread, where warnings.catch_warnings()
# (process-wide state) raced with the main thread's own and let the hint reach the terminal.
MLFLOW_HINTS = (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
)


class MlflowTracker:
    """Logs through MlflowClient with explicit run ids; metrics are sent in batches.

    Candidates (and the parent run's inputs) are logged in order by one background thread, so
    the store's round trips (~0.2 s a candidate on a local SQLite file, more on a remote server)
    overlap the next candidate's training instead of adding to the search's wall time. A logging
    call that failed is raised in the search's thread at the next call, or at the latest when
    the search finishes; finish() and abort() wait for the queue first.

    The parent run never stays RUNNING: finish() and abort() end it, a failure inside finish()
    ends it FAILED with the reason before re-raising, and a process that exits without either
    (an uncaught error outside run_search's handlers) ends it FAILED at interpreter exit.
    """

    # finish() on a small table, measured: ~3.8 s (plots, the requirement check of log_model, files)
    finish_seconds = 4.0

    def __init__(self, *, uri: str | None, experiment: str, run_name: str) -> None:
        # MLflow is imported and its client made on first use, inside the search's time limit
        # (~3 s: the import and, on a SQLite store, opening the database).
        self._requested_uri = uri
        for hint in MLFLOW_HINTS:
            warnings.filterwarnings("ignore", message=hint, category=UserWarning)
        self._experiment = experiment
        self._run_name = run_name
        self._parent: str | None = None
        self._experiment_id_cache: str | None = None
        self._children: dict[str, str] = {}
        self._interrupted: dict[str, str] = {}  # name -> run left RUNNING by a killed process
        self._config: dict[str, Any] = {}
        self._open = False
        self._queue: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    @property
    def run_id(self) -> str | None:
        return self._parent

    @functools.cached_property
    def _uri(self) -> str:
        return resolve_tracking_uri(self._requested_uri)

    @functools.cached_property
    def _client(self):
        import mlflow
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        mlflow.set_tracking_uri(self._uri)
        return MlflowClient(self._uri)

    @property
    def uri(self) -> str:
        return self._uri

    def _experiment_id(self) -> str:
        if self._experiment_id_cache is None:
            found = self._client.get_experiment_by_name(self._experiment)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    self._client.restore_experiment(found.experiment_id)
                self._experiment_id_cache = found.experiment_id
            else:
                self._experiment_id_cache = self._client.create_experiment(self._experiment)
        return self._experiment_id_cache

    # --- start ------------------------------------------------------------------------------------

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

        self._config = dict(config)
        if resume_run_id and self._reopen(resume_run_id):
            self._mark_open()
            return
        space_name, space_text = _space(config)
        new_store = store_seed.new_local_store(self._uri)
        try:  # the first contact with the store
            _probe(self._uri)
            seeded = new_store is not None and store_seed.seed(new_store)
            experiment_id = self._experiment_id()
        except Exception as error:
            raise ConfigError(
                f"cannot use the MLflow tracking store {redact(self._uri)} ({_reason(error, self._uri)})",
                "start the tracking server or correct --tracking-uri (or MLFLOW_TRACKING_URI), "
                "or pass --no-tracking",
            ) from None
        if new_store is not None and not seeded:
            store_seed.remember(new_store)
        run = self._client.create_run(
            experiment_id,
            run_name=self._run_name,
            tags={
                "autodl.version": autodl.__version__,
                "autodl.role": "search",
                "autodl.task": summary["task"],
                "autodl.metric": summary["metric"],
                "autodl.target": str(summary["target"]),
                "autodl.search_space": space_name,
                "autodl.tracking_uri": redact(self._uri) or "",
                "mlflow.note.content": _note(config, summary),
            },
        )
        self._parent = run.info.run_id
        self._mark_open()
        self._in_background(self._log_inputs, config, summary, data, source, space_text)

    def _log_inputs(
        self,
        config: dict[str, Any],
        summary: dict[str, Any],
        data: pd.DataFrame,
        source: str,
        space_text: str | None,
    ) -> None:
        """The parent run's params, data profile, protocol, search space and dataset record."""
        protocol = split_protocol(config, summary)
        params = {f"config.{k}": v for k, v in config.items() if v is not None and k != "extra"}
        if config.get("tracking_uri"):
            params["config.tracking_uri"] = redact(str(config["tracking_uri"]))
        params.update({f"data.{k}": v for k, v in summary.items() if not isinstance(v, dict | list)})
        params.update({"protocol.holdout": protocol["holdout"]["description"]})
        params.update({"protocol.cv": protocol["cross_validation"]["description"]})
        self._log_params(self._parent, params)
        self._client.log_dict(self._parent, summary, "data_profile.json")
        self._client.log_dict(self._parent, protocol, "protocol.json")
        if space_text is not None and config.get("trials") != 0:
            self._client.log_text(self._parent, space_text, "search_space.yaml")
        self._log_dataset(data, source, summary)

    def _mark_open(self) -> None:
        self._open = True
        atexit.register(self._end_at_exit)

    def _reopen(self, run_id: str) -> bool:
        """Continue the parent run of a resumed search; runs its killed process left RUNNING wait for catch_up."""
        from mlflow.exceptions import MlflowException

        try:
            parent = self._client.get_run(run_id)
        except MlflowException:
            return False  # not in this store: the resumed search gets a new parent run
        self._parent = run_id
        self._experiment_id_cache = parent.info.experiment_id
        self._client.update_run(run_id, status="RUNNING")
        self._client.set_tag(run_id, "autodl.resumed", "true")
        children = self._client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            max_results=5000,
        )
        for child in children:
            if child.info.status == "RUNNING":  # its process was killed while logging it
                self._interrupted[child.info.run_name] = child.info.run_id
            else:
                self._children[child.info.run_name] = child.info.run_id
        return True

    def catch_up(self, outcomes: list[CandidateOutcome], metric: str) -> None:
        """Re-log stored candidates whose run a killed process left half-logged or never created.

        A half-logged run is deleted and logged again whole, so each candidate has exactly one
        finished run; a RUNNING run with no stored candidate behind it ends KILLED.
        """
        stored = {outcome.name for outcome in outcomes}
        for name, run_id in self._interrupted.items():
            if name in stored:
                self._client.delete_run(run_id)
            else:
                self._client.set_terminated(run_id, "KILLED")
        self._interrupted.clear()
        for outcome in outcomes:
            if outcome.name not in self._children:
                self.log_candidate(outcome, metric)

    def _log_dataset(self, data: pd.DataFrame, source: str, summary: dict[str, Any]) -> None:
        import mlflow

        try:  # runs in the logging thread: MLflow's hints here are silenced by MLFLOW_HINTS
            dataset = mlflow.data.from_pandas(
                data, source=source, name=Path(source).name, targets=summary["target"]
            )
            entity = dataset._to_mlflow_entity()
            self._client.log_inputs(self._parent, datasets=[mlflow.entities.DatasetInput(entity)])
        except Exception as error:  # the dataset record is an extra; its failure must not stop a search
            self._client.set_tag(self._parent, "autodl.dataset_logging_error", str(error)[:250])

    # --- candidates ---------------------------------------------------------------------------------

    def log_candidate(self, outcome: CandidateOutcome, metric: str) -> None:
        """Log `outcome` as a nested run, in the background (see the class docstring)."""
        self._in_background(self._log_candidate, outcome, metric)

    def _log_candidate(self, outcome: CandidateOutcome, metric: str) -> None:
        from mlflow.entities import Metric, Param

        now = _millis()
        run = self._client.create_run(
            self._experiment_id(),
            # the candidate ran before it is logged: start it back then, so the UI's duration is its fit time
            start_time=now - int(max(outcome.fit_seconds, 0.0) * 1000),
            run_name=outcome.name,
            tags={
                "mlflow.parentRunId": self._parent,
                "autodl.role": outcome.family,
                "autodl.family": outcome.family,
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
            for key in ("best_epoch", "epochs"):
                if detail.get(key) is not None:
                    metrics.append(Metric(f"fold_{key}", float(detail[key]), now, fold_index))
            for key, values in detail.get("history", {}).items():
                metrics += [
                    Metric(f"fold{fold_index}_{key}", float(v), now, step)
                    for step, v in enumerate(values)
                    if np.isfinite(v)
                ]
        metrics = [m for m in metrics if np.isfinite(m.value)]
        params = [Param(k, _param_text(v)) for k, v in outcome.params.items()]
        try:
            for batch_params, batch_metrics in _batches(params, metrics):
                self._client.log_batch(run_id, params=batch_params, metrics=batch_metrics)
        except BaseException:
            self._client.set_terminated(run_id, "FAILED")  # never left RUNNING
            raise
        self._client.set_terminated(run_id, STATUS[outcome.state])

    # --- finish -------------------------------------------------------------------------------------

    def finish(self, result: SearchResult, *, input_example: pd.DataFrame, model_dir: Path) -> None:
        """Log the results, plots and model, then end the parent run (FAILED, with why, if that fails)."""
        try:
            self._finish(result, input_example, model_dir)
        except BaseException as error:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._end(status, f"logging the finished search failed: {type(error).__name__}: {error}")
            raise

    def _finish(self, result: SearchResult, input_example: pd.DataFrame, model_dir: Path) -> None:
        self._wait_for_background()
        self._log_scores(result)
        self._client.set_tag(self._parent, "autodl.final_model", result.final_name)
        members = ", ".join(f"{name} x{weight:.2f}" for name, weight in result.final_members.items())
        self._client.set_tag(self._parent, "autodl.final_members", members[:5000])
        self._client.set_tag(self._parent, "autodl.interrupted", str(result.interrupted).lower())
        self._client.set_tag(
            self._parent, "autodl.stop_reason", str(result.decisions.get("stop_reason", ""))[:5000]
        )
        leaderboard = result.leaderboard
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MLflow's integer-column schema hint
            self._client.log_table(self._parent, data=leaderboard, artifact_file="leaderboard.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "leaderboard.csv"
            leaderboard.to_csv(path, index=False)
            self._client.log_artifact(self._parent, str(path))
        self._client.log_dict(self._parent, _jsonable(result.decisions), "decisions.json")
        best = None
        if len(leaderboard):
            best_name = str(leaderboard.iloc[0]["candidate"])
            self._client.set_tag(self._parent, "autodl.best_candidate", best_name)
            if best_name in self._children:
                best = (self._children[best_name], best_name)
                self._tag_best(best[0], result)
        with tempfile.TemporaryDirectory() as tmp:
            # The PNGs are drawn in the background while the model is logged (~2-3 s each on a
            # small table): logging the model spends much of its time in file copies and
            # predictions that release the GIL. Drawn plots are logged even if the model fails.
            drawn = self._executor().submit(_draw_plots, result, best, self._config, Path(tmp))
            try:
                self._log_keras_files(model_dir)
                self._log_model(result, input_example, model_dir)
            finally:
                self._log_plots(drawn.result(), best, Path(tmp))
        self._end("KILLED" if result.interrupted else "FINISHED", None)

    def _tag_best(self, run_id: str, result: SearchResult) -> None:
        """Tag the best candidate's run and describe it (its plots come with the search's)."""
        from mlflow.entities import RunTag

        better = "higher" if result.greater_is_better else "lower"
        note = (
            f"Best candidate of the search by mean CV {result.metric} ({better} is better), rank 1 of "
            f"{len(result.leaderboard)}. The final model is {result.final_name}; see the parent run."
        )
        self._client.log_batch(
            run_id, tags=[RunTag("autodl.best", "true"), RunTag("mlflow.note.content", note)]
        )
        self._client.set_tag(self._parent, "autodl.best_run_id", run_id)

    def _log_scores(self, result: SearchResult) -> None:
        """test_<m> for every metric scored on the test split, next to cv_<m> of the final model."""
        from mlflow.entities import Metric

        now = _millis()
        metrics = {f"test_{k}": v for k, v in result.test_scores.items()}
        metrics.update({f"cv_{k}": v for k, v in _cv_scores(result).items()})
        metrics[f"cv_{result.metric}"] = result.cv_score
        states = [o.state for o in result.outcomes]
        metrics.update({f"n_{state}": states.count(state) for state in ("complete", "pruned", "failed")})
        metrics["n_candidates"] = len(states)
        if "elapsed_seconds" in result.decisions:
            metrics["elapsed_seconds"] = result.decisions["elapsed_seconds"]
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and np.isfinite(v)]
        self._client.log_batch(self._parent, metrics=batch)

    def _log_plots(self, drawn: DrawnPlots, best: tuple[str, str] | None, folder: Path) -> None:
        """The PNGs `_draw_plots` wrote under `folder`: the search's on the parent run, the best
        candidate's on its run, each under plots/; each plot not drawn gets a tag saying why."""
        from mlflow.entities import Metric, RunTag

        if best is not None:
            if any((folder / "best").glob("*.png")):
                self._client.log_artifacts(best[0], str(folder / "best"), "plots")
            for plot, reason in drawn.best_skipped.items():
                self._client.set_tag(best[0], f"autodl.plot_skipped.{plot}", reason)
        if any((folder / "search").glob("*.png")):
            self._client.log_artifacts(self._parent, str(folder / "search"), "plots")
        tags = [RunTag(f"autodl.plot_skipped.{name}", reason) for name, reason in drawn.skipped.items()]
        self._client.log_batch(
            self._parent,
            metrics=[Metric("plots_seconds", round(drawn.seconds, 3), _millis(), 0)],
            tags=tags,
        )

    def _log_keras_files(self, model_dir: Path) -> None:
        """The final model's Keras fold networks in the native format: keras_models/<member>/fold_<i>.keras."""
        manifest_path = Path(model_dir) / "autodl-model.json"
        if not manifest_path.is_file():
            return
        manifest = json.loads(manifest_path.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for member in manifest.get("members", []):
                for index, part in enumerate(member.get("folds", [])):
                    source = Path(model_dir) / part["path"] / "keras" / "model.keras"
                    if part.get("estimator") == "keras" and source.is_file():
                        target = root / member["name"] / f"fold_{index}.keras"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(source, target)
            if not any(root.iterdir()):
                return
            (root / "README.txt").write_text(KERAS_README)
            self._client.log_artifacts(self._parent, tmp, "keras_models")

    def _log_model(self, result: SearchResult, input_example: pd.DataFrame, model_dir: Path) -> None:
        import mlflow

        from autodl.serve import log_pyfunc_model

        with mlflow.start_run(run_id=self._parent):
            cv = result.cv_evaluation
            info = log_pyfunc_model(
                model_dir, input_example, result.model, None if cv is None else cv["scores"]
            )
        self._client.set_tag(self._parent, "autodl.model_uri", info.model_uri)
        result.decisions["mlflow_model_uri"] = info.model_uri
        name = self._config.get("register_model")
        if name:
            self._register(result, info.model_uri, name)

    def _register(self, result: SearchResult, model_uri: str, name: str) -> None:
        import mlflow

        tags = {"autodl.run_id": self._parent, "autodl.task": result.task, "autodl.metric": result.metric}
        tags[f"cv_{result.metric}"] = f"{result.cv_score:.6g}"
        if result.test_score is not None:
            tags[f"test_{result.metric}"] = f"{result.test_score:.6g}"
        version = mlflow.register_model(model_uri, name, tags=tags)
        registered = f"models:/{name}/{version.version}"
        self._client.set_tag(self._parent, "autodl.registered_model", name)
        self._client.set_tag(self._parent, "autodl.registered_version", str(version.version))
        self._client.set_tag(self._parent, "autodl.registered_model_uri", registered)
        result.decisions["registered_model"] = {
            "name": name,
            "version": str(version.version),
            "uri": registered,
        }

    # --- ending ---------------------------------------------------------------------------------------

    def abort(self, status: str, reason: str) -> None:
        self._end(status, reason)

    def _end(self, status: str, reason: str | None) -> None:
        """End the parent run with `status` (and `reason` as autodl.stop_reason); never raises."""
        if self._parent is None or not self._open:
            return
        self._open = False
        atexit.unregister(self._end_at_exit)
        try:
            self._wait_for_background()
        except Exception as error:  # already failing: the run still gets its end status below
            logging.getLogger(__name__).warning("logging a candidate to MLflow failed: %s", error)
        if self._queue is not None:
            self._queue.shutdown()
            self._queue = None
        try:
            if reason:
                self._client.set_tag(self._parent, "autodl.stop_reason", reason[:5000])
            self._client.set_terminated(self._parent, status)
        except Exception as error:  # the store itself is failing: say so, never mask the original error
            logging.getLogger(__name__).warning(
                "could not mark MLflow run %s as %s: %s", self._parent, status, error
            )

    def _end_at_exit(self) -> None:
        self._end("FAILED", "the process exited before the search finished")

    # --- the background queue ---------------------------------------------------------------------

    def _in_background(self, call: Callable[..., None], *args: Any) -> None:
        """Queue `call(*args)` behind the earlier logging calls; first raise any that failed."""
        failed = [future for future in self._pending if future.done() and future.exception()]
        self._pending = [future for future in self._pending if not future.done()]
        if failed:
            failed[0].result()
        self._pending.append(self._executor().submit(call, *args))

    def _executor(self) -> ThreadPoolExecutor:
        if self._queue is None:
            self._queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autodl-mlflow")
        return self._queue

    def _wait_for_background(self) -> None:
        """Wait until every queued logging call has run; raise the first failure among them."""
        pending, self._pending = self._pending, []
        failures = [future.exception() for future in pending if future.exception() is not None]
        if failures:
            raise failures[0]

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(run_id, params=items[start : start + 100])


@dataclass
class DrawnPlots:
    """What `_draw_plots` could not draw (plot -> why), for the search and its best candidate."""

    skipped: dict[str, str] = field(default_factory=dict)
    best_skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _draw_plots(
    result: SearchResult, best: tuple[str, str] | None, config: dict[str, Any], folder: Path
) -> DrawnPlots:
    """Write the search's plots to folder/search and the best candidate's (fold scores, learning
    curves) to folder/best as PNGs. Never raises: plots are for review, and a bug in them must
    not lose the search, so a failure becomes the reason the plots are missing."""
    import time

    from autodl.plots import candidate_plots, search_plots

    started = time.perf_counter()
    drawn = DrawnPlots()
    try:
        if best is not None:
            outcome = next((o for o in result.outcomes if o.name == best[1]), None)
            if outcome is not None:
                plots = candidate_plots(outcome, result.metric)
                plots.save(folder / "best")
                drawn.best_skipped = dict(plots.skipped)
        plots = search_plots(result, study_name=config.get("study_name") or "autodl")
        plots.save(folder / "search")
        drawn.skipped = dict(plots.skipped)
    except Exception as error:
        drawn.skipped["all"] = f"{type(error).__name__}: {error}"[:250]
    drawn.seconds = time.perf_counter() - started
    return drawn


KERAS_README = """Native Keras (.keras) fold networks of the final model's Keras members.

<member>/fold_<i>.keras is the network trained on fold i; member weights are in decisions.json.
Each network takes the rows as transformed by that fold's preprocessing, which lives with the
pyfunc model (model/artifacts/model/member_<j>/fold_<i>/preprocess.skops). For raw rows, load
the pyfunc model instead: mlflow.pyfunc.load_model("runs:/<run id>/model") or the autodl.model_uri tag.
Load one network with keras.saving.load_model(path, safe_mode=True).
"""


def split_protocol(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """How the rows were split and scored, in words and numbers (protocol.json and params)."""
    group, time_column = config.get("group_column"), config.get("time_column")
    stratified = summary.get("task") != "regression" and time_column is None
    test_rows, dev_rows = summary.get("test_rows", 0), summary.get("dev_rows", 0)
    folds, repeats, seed = config.get("folds"), config.get("repeats") or 1, config.get("seed")
    kind = f"{'stratified ' if stratified else ''}{folds}-fold CV"
    if repeats > 1:
        kind += f" repeated {repeats} times"
    chosen = "at random"
    if group is not None:
        kind += f", each '{group}' group in one fold"
        chosen = f"as whole '{group}' groups"
    elif time_column is not None:
        kind = (
            f"{folds} forward-chaining folds by '{time_column}' (each scored on rows later than its "
            f"training rows; the earliest 1/{folds + 1} is never scored)"
        )
        chosen = f"as the latest rows by '{time_column}'"
    holdout = (
        f"{'stratified ' if stratified else ''}test split of {config.get('test_size'):.0%} ({test_rows} rows) "
        f"chosen {chosen}, set aside first and scored once, on the final model"
        if test_rows
        else "no test split: the CV estimate is the only score"
    )
    return {
        "holdout": {
            "test_size": config.get("test_size"),
            "test_rows": test_rows,
            "dev_rows": dev_rows,
            "stratified": stratified,
            "seed": seed,
            "description": holdout,
        },
        "cross_validation": {
            "folds": folds,
            "repeats": repeats,
            "stratified": stratified,
            "seed": seed,
            "rows": dev_rows,
            "group_column": group,
            "time_column": time_column,
            "description": f"{kind} on the {dev_rows} development rows",
        },
        "preprocessing": "fitted inside each training fold only (imputation, scaling, encoding)",
        "keras_early_stopping": "each fold network early-stops on an inner validation split of its own training rows",
        "final_model": (
            f"'{config.get('final')}': built from out-of-fold predictions; its fold models are the final "
            "model (no refit on the test rows)"
        ),
    }


def _space(config: dict[str, Any]) -> tuple[str, str | None]:
    """The search space's name and YAML text (None when it cannot be read)."""
    value = str(config.get("space"))
    try:
        from autodl.spaces import load_space
        from autodl.spaces.schema import spaces_folder

        space = load_space(value)
        path = Path(value)
        if path.suffix in (".yaml", ".yml"):
            return space.name, path.read_text(encoding="utf-8")
        return space.name, (spaces_folder() / f"{value}.yaml").read_text()
    except Exception:
        return value, None


def _note(config: dict[str, Any], summary: dict[str, Any]) -> str:
    """The parent run's description in the MLflow UI."""
    return (
        f"autodl search for **{summary['target']}** ({summary['task']}, metric {summary['metric']}) "
        f"on {summary.get('source')}: {summary['rows']} rows, {summary['columns']} columns. "
        f"Task: {summary.get('task_reason')}. See data_profile.json, protocol.json, decisions.json, "
        "leaderboard.csv and plots/ under Artifacts; nested runs are the baselines and Keras trials."
    )


def _cv_scores(result: SearchResult) -> dict[str, float]:
    """Every metric of the final model's out-of-fold predictions (the CV estimate)."""
    cv = result.cv_evaluation
    if cv is None or not len(cv.get("y_true", ())):
        return {}
    try:
        from autodl.metrics import resolve_metric, score_all

        return score_all(result.task, resolve_metric(result.task, result.metric), cv["y_true"], cv["scores"])
    except Exception:
        return {}


def _reason(error: Exception, uri: str) -> str:
    """The first line of an error, shortened, with the store's password (if any) hidden."""
    from urllib.parse import urlsplit

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    password = urlsplit(uri).password if "://" in uri else None
    if password:
        text = text.replace(password, "***")
    return text[:200]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def _batches(params: list, metrics: list) -> Iterator[tuple[list, list]]:
    """`params` and `metrics` in as few log_batch calls as MLflow allows: at most 100 params and
    1000 entities in all per call (each call is a store transaction, ~30 ms on SQLite)."""
    while params or metrics:
        batch_params, params = params[:100], params[100:]
        room = 1000 - len(batch_params)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        yield batch_params, batch_metrics


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def _probe(uri: str) -> None:
    """Fail within seconds when an HTTP tracking server is not there (MLflow's own client
    retries for minutes). Any HTTP answer, even an error status, means a server is there."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials are not needed for /health
    health = urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health"))
    try:
        urllib.request.urlopen(health, timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return
