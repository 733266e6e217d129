"""run_search: the one place where the stages are wired together, in one direction.

data -> task/profile -> holdout + folds -> baselines -> Keras search -> final model -> test score
-> saved model, summary and tracking.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from autodl import runtime
from autodl.candidates.baselines import baseline_candidates, select_baselines
from autodl.config import SearchConfig
from autodl.data.dataset import Dataset, build_dataset
from autodl.data.load import read_table
from autodl.ensemble import blend, select_ensemble
from autodl.errors import ConfigError, SearchError
from autodl.events import Reporter
from autodl.metrics import DEFAULT_METRIC, Metric, resolve_metric, score_all
from autodl.model import Member, TabularModel
from autodl.result import CandidateOutcome, SearchResult
from autodl.search.cv import CVResult, DevData, cross_validate
from autodl.spaces import load_space
from autodl.split import holdout_split, make_folds
from autodl.tracking.base import NullTracker, Tracker

BASELINE_SHARE = 0.4
KEEP_KERAS_MODELS = 8


class CandidatePool:
    """Out-of-fold predictions and fold models of the candidates that may join the final model.

    Every baseline is kept; of the Keras trials only the best KEEP_KERAS_MODELS, so memory stays
    bounded over long searches.
    """

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.scores: dict[str, float] = {}
        self.oof: dict[str, np.ndarray] = {}
        self.models: dict[str, list] = {}
        self.family: dict[str, str] = {}

    def add(self, outcome: CandidateOutcome, cv: CVResult) -> None:
        if outcome.name == "dummy":  # the reference floor, never a useful ensemble member
            return
        self.scores[outcome.name], self.family[outcome.name] = cv.mean, outcome.family
        self.oof[outcome.name], self.models[outcome.name] = cv.oof, cv.models
        keras = sorted(
            (n for n in self.scores if self.family[n] == "keras"),
            key=lambda n: self.scores[n],
            reverse=self.metric.greater_is_better,
        )
        for name in keras[KEEP_KERAS_MODELS:]:
            for store in (self.scores, self.oof, self.models, self.family):
                store.pop(name)

    def best(self) -> str:
        return sorted(self.scores, key=lambda n: self.scores[n], reverse=self.metric.greater_is_better)[0]


def run_search(
    config: SearchConfig,
    data: str | Path | pd.DataFrame,
    *,
    reporter: Reporter | None = None,
    tracker: Tracker | None = None,
) -> SearchResult:
    """Run a whole search on `data` (a path or a DataFrame) and return its result.

    Raises AutodlError subclasses for bad input, before any expensive work.
    """
    runtime.configure()
    reporter = reporter or Reporter()
    started = time.monotonic()
    deadline = started + config.time_limit if config.time_limit else None
    frame, source = (
        (data, "dataframe")
        if isinstance(data, pd.DataFrame)
        else (read_table(data, **_read_options(config)), str(data))
    )
    dataset = build_dataset(
        frame,
        target=config.target,
        task=config.task,
        drop=config.drop_columns,
        folds=config.folds,
        test_size=config.test_size,
    )
    metric = resolve_metric(dataset.task.kind, config.metric)
    space = load_space(config.space) if config.trials != 0 else None
    baselines = select_baselines(
        baseline_candidates(dataset.task.kind, dataset.n_rows, config.seed), config.baselines
    )
    output_dir = _prepare_output(config.output_dir)
    metric_reason = (
        "set by --metric"
        if config.metric
        else f"the default for {dataset.task.kind} tasks (AutoML Benchmark)"
    )
    reporter.dataset(source=source, frame=frame, dataset=dataset, metric=metric, metric_reason=metric_reason)

    stratify = dataset.task.is_classification
    holdout = holdout_split(dataset.y, test_size=config.test_size, stratify=stratify, seed=config.seed)
    dev_features = dataset.features.iloc[holdout.dev].reset_index(drop=True)
    folds = make_folds(
        dataset.y[holdout.dev],
        folds=config.folds,
        repeats=config.repeats,
        stratify=stratify,
        seed=config.seed,
    )
    dev = DevData(
        dev_features,
        dataset.y[holdout.dev],
        folds,
        dataset.profile,
        dataset.task.kind,
        dataset.task.n_classes,
    )
    reporter.split(
        n_dev=len(holdout.dev),
        n_test=len(holdout.test),
        folds=config.folds,
        repeats=config.repeats,
        stratified=stratify,
    )

    tracker = tracker or NullTracker()
    summary = _summary(dataset, metric, source, frame, holdout_sizes=(len(holdout.dev), len(holdout.test)))
    tracker.start(config=config.as_dict(), summary=summary, data=frame, source=source)

    pool = CandidatePool(metric)
    outcomes: list[CandidateOutcome] = []

    def seconds_left() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    def record(outcome: CandidateOutcome, cv: CVResult | None) -> None:
        outcomes.append(outcome)
        if cv is not None and outcome.state == "complete":
            pool.add(outcome, cv)
        tracker.log_candidate(outcome, metric.name)
        best = min(
            (o for o in outcomes if o.state == "complete"),
            key=lambda o: -o.mean if metric.greater_is_better else o.mean,
            default=None,
        )
        reporter.outcome(outcome, best=best, seconds_left=seconds_left())

    interrupted, stop_reason = False, "budget spent"
    try:
        _run_baselines(baselines, dev, metric, record, reporter, config, seconds_left)
        if space is not None:
            stop_reason = _run_keras(config, space, dev, metric, record, reporter, output_dir, deadline)
    except KeyboardInterrupt:
        interrupted, stop_reason = True, "interrupted by the user"
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C exits at once
        reporter.note(
            "Interrupted: finishing with the candidates completed so far (press Ctrl-C again to quit now)."
        )
    except BaseException as error:
        tracker.abort("FAILED", f"{type(error).__name__}: {error}")
        raise

    if not pool.scores:  # the dummy alone does not count as a model
        tracker.abort("KILLED" if interrupted else "FAILED", "no candidate completed")
        raise SearchError(
            "no candidate (other than the dummy reference) completed its cross-validation"
            + (" before the interruption" if interrupted else ""),
            "raise --time-limit, or check the failure reasons printed above",
        )

    weights = select_ensemble(pool.oof, dev.y, metric) if config.final == "ensemble" else {pool.best(): 1.0}
    cv_score = metric(dev.y, blend(pool.oof, weights))
    final_name = "ensemble" if len(weights) > 1 else next(iter(weights))
    model = TabularModel(
        members=[Member(name, weight, pool.models[name]) for name, weight in weights.items()],
        task=dataset.task.kind,
        classes=dataset.task.classes,
        columns=[str(c) for c in dataset.features.columns],
        target=dataset.target_name,
    )
    test_scores = _score_test(model, dataset, holdout.test, metric)
    decisions = {
        "task": dataset.task.kind,
        "task_reason": dataset.task.reason,
        "metric": metric.name,
        "metric_reason": metric_reason,
        "stop_reason": stop_reason,
        "final_members": weights,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    result = SearchResult(
        task=dataset.task.kind,
        metric=metric.name,
        greater_is_better=metric.greater_is_better,
        outcomes=outcomes,
        final_name=final_name,
        final_members=weights,
        cv_score=cv_score,
        test_scores=test_scores,
        output_dir=output_dir,
        model_dir=output_dir / "model",
        decisions=decisions,
        run_id=tracker.run_id,
        tracking_uri=tracker.uri,
        interrupted=interrupted,
        model=model,
    )
    model.save(
        result.model_dir,
        extra={"metric": metric.name, "cv_score": cv_score, "test_scores": test_scores},
    )
    _write_summary(result, summary)
    tracker.finish(result, input_example=dev_features.head(5), model_dir=result.model_dir)
    reporter.finished(result, details={"summary": summary})
    return result


def _read_options(config: SearchConfig) -> dict:
    return {key: config.extra[key] for key in ("delimiter", "encoding") if config.extra.get(key)}


def _run_baselines(baselines, dev, metric, record, reporter, config, seconds_left) -> None:
    reporter.phase("baselines", len(baselines), seconds_left())
    for candidate in baselines:
        left = seconds_left()
        if (
            left is not None
            and config.time_limit
            and left < (1 - BASELINE_SHARE) * config.time_limit
            and candidate.name != "dummy"
        ):
            record(
                CandidateOutcome(
                    candidate.name,
                    "baseline",
                    candidate.params,
                    "pruned",
                    "skipped: baselines used their share of the time limit",
                ),
                None,
            )
            continue
        try:
            cv = cross_validate(candidate, dev, metric)
        except Exception as error:  # one failing baseline fails alone
            record(
                CandidateOutcome(
                    candidate.name,
                    "baseline",
                    candidate.params,
                    "failed",
                    f"{type(error).__name__}: {error}"[:500],
                ),
                None,
            )
            continue
        record(
            CandidateOutcome(
                candidate.name,
                "baseline",
                candidate.params,
                "complete",
                "",
                cv.fold_scores,
                cv.fit_seconds,
                cv.fold_details,
            ),
            cv,
        )


def _run_keras(config, space, dev, metric, record, reporter, output_dir: Path, deadline) -> str:
    from autodl.search.engine import Budget, open_study, run_keras_search

    if deadline is not None and deadline - time.monotonic() <= 1:
        return "time limit reached before the Keras search"
    study = open_study(
        storage_path=output_dir / "study.journal",
        study_name=config.study_name or "autodl",
        metric=metric,
        seed=config.seed,
        resume=config.resume,
    )
    reporter.phase("keras", config.trials, None if deadline is None else deadline - time.monotonic())
    return run_keras_search(
        study,
        space=space,
        data=dev,
        metric=metric,
        budget=Budget(config.trials, deadline),
        seed=config.seed,
        max_epochs=config.max_epochs,
        on_outcome=record,
    )


def _score_test(
    model: TabularModel, dataset: Dataset, test_rows: np.ndarray, metric: Metric
) -> dict[str, float]:
    """The one and only use of the test rows."""
    if len(test_rows) == 0:
        return {}
    scores = model.scores(dataset.features.iloc[test_rows])
    return score_all(dataset.task.kind, metric, dataset.y[test_rows], scores)


def _prepare_output(requested: Path | None) -> Path:
    folder = Path(requested) if requested else Path("autodl-runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if folder.exists() and any(folder.iterdir()) and not (folder / "study.journal").exists():
        raise ConfigError(
            f"output folder {folder} exists and is not empty",
            "pass a new --output folder, or remove it",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write to the output folder {folder} ({error.strerror})",
            "pass a writable --output folder",
        ) from error
    return folder


def _summary(dataset: Dataset, metric: Metric, source: str, frame: pd.DataFrame, holdout_sizes) -> dict:
    return {
        "source": source,
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "target": dataset.target_name,
        "task": dataset.task.kind,
        "task_reason": dataset.task.reason,
        "classes": [str(c) for c in dataset.task.classes] if dataset.task.classes else None,
        "metric": metric.name,
        "default_metric": DEFAULT_METRIC[dataset.task.kind],
        "rows_missing_target": dataset.n_missing_target,
        "dev_rows": holdout_sizes[0],
        "test_rows": holdout_sizes[1],
        "columns_profile": [
            {
                "name": c.name,
                "kind": c.kind,
                "reason": c.reason,
                "distinct": c.n_unique,
                "missing": c.n_missing,
            }
            for c in dataset.profile.columns
        ],
    }


def _write_summary(result: SearchResult, summary: dict) -> None:
    result.leaderboard.to_csv(result.output_dir / "leaderboard.csv", index=False)
    payload = {
        "summary": summary,
        "decisions": result.decisions,
        "cv_score": result.cv_score,
        "test_scores": result.test_scores,
        "final_model": result.final_name,
        "final_members": result.final_members,
        "interrupted": result.interrupted,
        "mlflow_run_id": result.run_id,
        "outcomes": [
            {
                "name": o.name,
                "family": o.family,
                "state": o.state,
                "reason": o.reason,
                "fold_scores": o.fold_scores,
                "params": o.params,
                "fit_seconds": o.fit_seconds,
            }
            for o in result.outcomes
        ],
    }
    (result.output_dir / "summary.json").write_text(json.dumps(payload, indent=1, default=str))
