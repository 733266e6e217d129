"""run_search: the one place where the stages are wired together, in one direction.

data -> task/profile -> holdout + folds -> baselines -> Keras search -> final model -> test score
-> saved model, summary and tracking.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from autodl import runtime
from autodl.candidates.base import Candidate
from autodl.candidates.baselines import baseline_candidates, select_baselines
from autodl.config import SearchConfig
from autodl.data.dataset import Dataset, build_dataset
from autodl.data.load import read_table
from autodl.ensemble import MAX_MEMBERS, blend, keep_heaviest, select_ensemble, selection_seconds
from autodl.errors import ConfigError, SearchError, disk_full
from autodl.events import Reporter
from autodl.metrics import DEFAULT_METRIC, Metric, resolve_metric, score_all
from autodl.model import Member, TabularModel
from autodl.pool import REFERENCE, CandidatePool
from autodl.result import CandidateOutcome, SearchResult
from autodl.spaces.schema import SearchSpace
from autodl.split import Holdout, check_split_classes, holdout_split, make_folds
from autodl.store import RunStore
from autodl.tracking.base import NullTracker, Tracker
from autodl.tuning.cv import CVResult, DevData, cross_validate
from autodl.tuning.sources import trial_source

BASELINE_SHARE = 0.4
# How far past their share the baselines may run (fraction of the time limit) before one is stopped.
OVERRUN_GRACE = 0.1
MIN_PROJECTED_SECONDS = 2.0  # a fit in steps is judged on its pace once it has run this long
# The final stage builds each Keras member's fold networks from their weights and writes them as
# .keras files: measured (benchmarks/RESULTS.md) at most 0.2 s a network with its test
# predictions, 0.11 s for 20 networks of 128-512 units on 50k rows.
KERAS_NETWORK_SECONDS = 0.15
# the heaviest Keras members a final ensemble keeps: their networks are built and saved in the
# final stage (resampled selections on this project's benchmarks held 0-6; four kept the scores)
MAX_KERAS_MEMBERS = 4
# A small search stores a few MiB; forests and fold models on 100k+ rows reach hundreds.
MIN_FREE_DISK = 256 * 2**20
RESUME_KEYS = (
    "target",
    "task",
    "metric",
    "test_size",
    "folds",
    "repeats",
    "seed",
    "space",
    "drop_columns",
    "group_column",
    "time_column",
)


@dataclass
class Prepared:
    """The validated inputs of a search: data, task, metric, split and candidates."""

    frame: pd.DataFrame
    source: str
    dataset: Dataset
    metric: Metric
    metric_reason: str
    space: SearchSpace | None
    trials: object | None
    baselines: list[Candidate]
    holdout: Holdout
    dev: DevData


def run_search(
    config: SearchConfig,
    data: str | Path | pd.DataFrame,
    *,
    reporter: Reporter | None = None,
    tracker: Tracker | None = None,
    started: float | None = None,
) -> SearchResult:
    """Run a whole search on `data` (a path or a DataFrame) and return its result.

    Raises AutodlError subclasses for bad input, before any expensive work. With
    `config.resume`, continues the search stored in `config.output_dir`. The time limit counts
    from `started` (a time.monotonic() value; default: now).
    """
    with runtime.interrupt_handler_installed():
        return _run_search(config, data, reporter, tracker, started)


def _run_search(
    config: SearchConfig,
    data: str | Path | pd.DataFrame,
    reporter: Reporter | None,
    tracker: Tracker | None,
    started: float | None,
) -> SearchResult:
    runtime.configure()
    reporter = reporter or Reporter()
    tracker = tracker or NullTracker()
    started = time.monotonic() if started is None else started
    deadline = started + config.time_limit if config.time_limit else None
    prepared = _prepare(config, data)
    output_dir = _prepare_output(config.output_dir, resume=config.resume)
    store = RunStore(output_dir)
    previous = _check_resume(config, store, prepared)
    reporter.dataset(
        source=prepared.source,
        frame=prepared.frame,
        dataset=prepared.dataset,
        metric=prepared.metric,
        metric_reason=prepared.metric_reason,
    )
    reporter.split(
        n_dev=len(prepared.holdout.dev),
        n_test=len(prepared.holdout.test),
        folds=config.folds,
        repeats=config.repeats,
        stratified=prepared.dataset.task.is_classification,
        grouped_by=config.group_column,
        ordered_by=config.time_column,
    )
    summary = _summary(prepared)
    tracker.start(
        config=config.as_dict(),
        summary=summary,
        data=prepared.frame,
        source=prepared.source,
        resume_run_id=(previous or {}).get("mlflow_run_id"),
    )
    store.write_manifest(
        {"config": config.as_dict(), "fingerprint": _fingerprint(prepared), "mlflow_run_id": tracker.run_id}
    )

    pool = CandidatePool(prepared.metric, store)
    outcomes: list[CandidateOutcome] = []
    if previous is not None:
        outcomes = store.outcomes()
        tracker.catch_up(outcomes, prepared.metric.name)
        for name, family, cv in store.load_candidates(with_models=False):
            pool.add(name, family, cv, persist=False)
        reporter.info(
            f"Resuming: {len(outcomes)} candidates already finished, {len(pool.scores)} kept for the final model."
        )

    def seconds_left() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    def announce(outcome: CandidateOutcome) -> None:
        outcomes.append(outcome)
        tracker.log_candidate(outcome, prepared.metric.name)
        reporter.outcome(outcome, best=_best(outcomes, prepared.metric), seconds_left=seconds_left())

    def record(outcome: CandidateOutcome, cv: CVResult | None) -> None:
        """A candidate this process finished: kept in the store first, then announced."""
        if cv is not None and outcome.state == "complete":
            pool.add(outcome.name, outcome.family, cv)
        store.append_outcome(outcome)
        announce(outcome)

    def adopt(outcome: CandidateOutcome) -> None:
        """A trial a worker process finished: its files are already in the store."""
        cv = store.load_candidate(outcome.name, with_models=False) if outcome.state == "complete" else None
        if cv is not None:
            pool.add(outcome.name, outcome.family, cv, persist=False)
        announce(outcome)

    interrupted, stop_reason = False, "budget spent"
    capacity, keras_head_start = None, None
    if prepared.trials is not None:
        if prepared.space is not None and config.capacity_check and not config.resume:
            from autodl.tuning.capacity import CapacityCheckInBackground

            capacity = CapacityCheckInBackground(prepared.space, prepared.dev, seed=config.seed)

        def keras_head_start() -> None:
            # Beside the last baseline only (the SVM, or the extra trees on larger tables), which
            # fits without the GIL: TensorFlow's import holds it for most of its ~7 s, so any
            # earlier baseline beside it was stalled to its end (HGB on credit_data: 1.8 s -> 9 s),
            # which saved nothing and misled the time guard's projections.
            runtime.start_keras_import()
            if capacity is not None:
                capacity.start()

    try:
        done = {o.name for o in outcomes}
        _run_baselines(
            [c for c in prepared.baselines if c.name not in done],
            prepared,
            record,
            reporter,
            config,
            seconds_left,
            have_model=lambda: pool.has_model,
            before_last=keras_head_start,
        )
        if prepared.trials is not None:
            keras_deadline = None
            if deadline is not None:
                keras_deadline = partial(_keras_deadline, deadline, config, prepared, pool, tracker)
                reserve = deadline - keras_deadline()
                if reserve >= 1:
                    reporter.info(
                        f"up to {reserve:.0f} s of the time limit set aside for the final model and its logging"
                    )
            stop_reason = _run_keras(
                config, prepared, record, adopt, reporter, output_dir, keras_deadline, done, capacity
            )
    except KeyboardInterrupt:
        interrupted, stop_reason = True, "interrupted"
        runtime.interrupt_handled()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C exits at once
        reporter.note(
            "Interrupted: finishing with the candidates completed so far (Ctrl-C again quits at once)."
        )
    except BaseException as error:
        tracker.abort("FAILED", f"{type(error).__name__}: {error}")
        full = disk_full(error, output_dir)
        if full is not None:
            raise full from error
        raise
    finally:
        if capacity is not None:  # e.g. the time limit came before the Keras search
            capacity.cancel()
        runtime.wait_for_keras_import()  # no thread left half-way through an import at exit

    if not pool.has_model:  # the dummy alone does not count as a model
        tracker.abort("KILLED" if interrupted else "FAILED", "no candidate completed")
        raise SearchError(
            "no candidate (other than the dummy reference) completed its cross-validation"
            + (" before the interruption" if interrupted else ""),
            "raise --time-limit, or check the failure reasons printed above",
        )
    try:
        result = _finalize(
            config, prepared, pool, outcomes, output_dir, stop_reason, interrupted, started, tracker
        )
        _write_summary(result, summary)
    except BaseException as error:  # e.g. a full disk: the run must not stay RUNNING
        tracker.abort("FAILED", f"{type(error).__name__}: {error}")
        full = disk_full(error, output_dir)
        if full is not None:
            raise full from error
        raise
    tracker.finish(result, input_example=prepared.dev.features.head(5), model_dir=result.model_dir)
    reporter.finished(result, details={"summary": summary})
    return result


def _prepare(config: SearchConfig, data: str | Path | pd.DataFrame) -> Prepared:
    if isinstance(data, pd.DataFrame):
        frame, source = data, "dataframe"
    else:
        frame, source = read_table(data, **_read_options(config)), str(data)
    dataset = build_dataset(
        frame,
        target=config.target,
        task=config.task,
        drop=config.drop_columns,
        folds=config.folds,
        test_size=config.test_size,
        group_column=config.group_column,
        time_column=config.time_column,
    )
    metric = resolve_metric(dataset.task.kind, config.metric)
    metric_reason = (
        "set by --metric"
        if config.metric
        else f"the default for {dataset.task.kind} tasks (AutoML Benchmark)"
    )
    stratify = dataset.task.is_classification
    groups, times = dataset.groups, dataset.times
    holdout = holdout_split(
        dataset.y, test_size=config.test_size, stratify=stratify, seed=config.seed, groups=groups, times=times
    )
    dev_times = None if times is None else times[holdout.dev]
    nonnegative = dataset.task.kind == "regression" and bool(np.all(dataset.y[holdout.dev] >= 0))
    baselines = select_baselines(
        baseline_candidates(dataset.task.kind, dataset.n_rows, config.seed, nonnegative_target=nonnegative),
        config.baselines,
    )
    folds = make_folds(
        dataset.y[holdout.dev],
        folds=config.folds,
        repeats=config.repeats,
        stratify=stratify,
        seed=config.seed,
        groups=None if groups is None else groups[holdout.dev],
        times=dev_times,
    )
    if stratify and (groups is not None or times is not None):
        check_split_classes(dataset.y, holdout, folds, "grouped" if groups is not None else "time-ordered")
    dev = DevData(
        dataset.features.iloc[holdout.dev].reset_index(drop=True),
        dataset.y[holdout.dev],
        folds,
        dataset.profile,
        dataset.task.kind,
        dataset.task.n_classes,
        dev_times,
        None if groups is None else groups[holdout.dev],
    )
    space, trials = trial_source(config) if config.trials != 0 else (None, None)
    return Prepared(frame, source, dataset, metric, metric_reason, space, trials, baselines, holdout, dev)


def _fingerprint(prepared: Prepared) -> dict:
    hashed = pd.util.hash_pandas_object(prepared.frame, index=False).to_numpy()
    return {
        "rows": len(prepared.frame),
        "columns": list(map(str, prepared.frame.columns)),
        "hash": int(hashed.sum() % (2**61)),
    }


def _check_resume(config: SearchConfig, store: RunStore, prepared: Prepared) -> dict | None:
    """The stored manifest when resuming; ConfigError when there is nothing to resume or it differs."""
    previous = store.read_manifest()
    if not config.resume:
        return None
    if previous is None:
        raise ConfigError(
            f"nothing to resume in {store.folder} (no search.json)",
            "pass the --output folder of the interrupted search",
        )
    if previous["fingerprint"] != _fingerprint(prepared):
        raise ConfigError(
            f"the data differs from the data of the search stored in {store.folder}",
            "resume with the same file, or start a new search with a new --output",
        )
    current = json.loads(json.dumps(config.as_dict(), default=str))  # as the manifest stores it
    changed = [key for key in RESUME_KEYS if previous["config"].get(key) != current.get(key)]
    if changed:
        raise ConfigError(
            f"--resume needs the same settings as the stored search; these differ: {', '.join(changed)}",
            "repeat the original flags (see search.json in the output folder), or start a new --output",
        )
    return previous


def _final_stage_reserve(
    config: SearchConfig, prepared: Prepared, pool: CandidatePool, tracker: Tracker, keras_members: int
) -> float:
    """Seconds the final stage will take, out of the time limit: choosing the ensemble (its
    worst case over the candidates so far), scoring the test rows (from the kept candidates'
    measured prediction times), building and writing the fold networks of `keras_members`
    Keras members (kept as weights until then), and the tracker's logging of the finished search.

    The Keras search ends this much before the limit, so that the whole search ends within it.
    """
    selection = 0.0
    if config.final == "ensemble":
        selection = selection_seconds(pool.blendable(), prepared.dev.y, prepared.metric)
    scoring = pool.test_scoring_seconds(
        len(prepared.holdout.dev), len(prepared.holdout.test), config.folds, members=MAX_MEMBERS
    )
    networks = keras_members * config.folds * config.repeats * KERAS_NETWORK_SECONDS
    return selection + scoring + networks + tracker.finish_seconds


def _keras_deadline(
    deadline: float,
    config: SearchConfig,
    prepared: Prepared,
    pool: CandidatePool,
    tracker: Tracker,
    *,
    in_flight: int | None = None,
) -> float:
    """The time limit's deadline less the final stage's projected time, as measured so far.

    The final model can only hold the Keras trials kept so far and those still running (the
    deadline stops them, and a stopped trial may still complete): `in_flight` of them. None
    reserves room for the most members an ensemble takes, for processes that keep the deadline
    they start with while trials complete elsewhere.
    """
    members = MAX_KERAS_MEMBERS if in_flight is None else min(MAX_KERAS_MEMBERS, pool.kept_keras + in_flight)
    return deadline - _final_stage_reserve(config, prepared, pool, tracker, members)


def _best(outcomes: list[CandidateOutcome], metric: Metric) -> CandidateOutcome | None:
    complete = [o for o in outcomes if o.state == "complete"]
    return min(complete, key=lambda o: -o.mean if metric.greater_is_better else o.mean, default=None)


def _read_options(config: SearchConfig) -> dict:
    return {key: config.extra[key] for key in ("delimiter", "encoding") if config.extra.get(key)}


def _run_baselines(
    baselines, prepared: Prepared, record, reporter, config, seconds_left, have_model, before_last=None
) -> None:
    """Each baseline's k-fold CV, within the baselines' share of the time limit.

    A baseline that would end well past that share is stopped between folds, or between the
    steps of a model that fits in steps (HistGradientBoosting). Until a model has completed, no
    baseline is skipped and the bound is twice the time limit instead of the share: a search
    ends with a model unless none can finish in that time. `before_last()`, if given, is called
    before the last baseline's CV starts.
    """
    if not baselines:
        return

    # The share is of the time left when the baselines start: reading the data and opening the
    # MLflow store (~5 s) ate a third of a 20 s search's share, and cheap baselines were skipped.
    left_at_start = seconds_left()
    kept_for_the_rest = None if left_at_start is None else (1 - BASELINE_SHARE) * left_at_start

    def share_left() -> float:
        return seconds_left() - kept_for_the_rest

    def first_model_left() -> float:
        # A search ends with a model: the first may overrun the limit, by no more than the limit.
        return seconds_left() + config.time_limit

    reporter.phase("baselines", len(baselines), seconds_left())
    for candidate in baselines:
        runtime.check_interrupt()
        left = seconds_left()
        spent = left is not None and config.time_limit and left < kept_for_the_rest
        if spent and candidate.name != REFERENCE and have_model():
            reason = "skipped: baselines used their share of the time limit"
            record(CandidateOutcome(candidate.name, "baseline", candidate.params, "pruned", reason), None)
            continue
        if before_last is not None and candidate is baselines[-1]:
            before_last()
        guard = None
        if config.time_limit and candidate.name != REFERENCE:
            guard = OverrunGuard(
                len(prepared.dev.folds),
                *(
                    (share_left, "the baselines' share of the time limit")
                    if have_model()
                    else (first_model_left, "twice the time limit")
                ),
                grace=OVERRUN_GRACE * config.time_limit,
            )
        try:
            cv = cross_validate(
                candidate,
                prepared.dev,
                prepared.metric,
                after_fold=guard,
                during_fold=guard.during_fold if guard else None,
            )
        except BaselineOverrun as stopped:
            record(
                CandidateOutcome(candidate.name, "baseline", candidate.params, "pruned", str(stopped)), None
            )
            continue
        except Exception as error:  # one failing baseline fails alone
            reason = f"{type(error).__name__}: {error}"[:500]
            record(CandidateOutcome(candidate.name, "baseline", candidate.params, "failed", reason), None)
            continue
        outcome = CandidateOutcome(
            candidate.name,
            "baseline",
            candidate.params,
            "complete",
            "",
            cv.fold_scores,
            cv.fit_seconds,
            cv.fold_details,
        )
        record(outcome, cv)


class BaselineOverrun(RuntimeError):
    """A baseline's remaining folds would end too far past the baselines' share of the time."""


class OverrunGuard:
    """An `after_fold` callback (and `during_fold`): stops a CV whose remaining work, at the pace
    so far, would end more than `grace` seconds after `seconds_left()` runs out; `bound` names
    what runs out."""

    def __init__(self, n_folds: int, seconds_left, bound: str, *, grace: float, clock=time.monotonic) -> None:
        self.n_folds, self.seconds_left, self.bound = n_folds, seconds_left, bound
        self.grace, self.clock = grace, clock
        self.started = self.fold_started = clock()
        self.done = 0

    def __call__(self, index: int, fold_score: float) -> None:
        self.done += 1
        self.fold_started = self.clock()
        remaining = self.n_folds - self.done
        if remaining <= 0:
            return
        projected = (self.fold_started - self.started) / self.done * remaining
        if projected > self.seconds_left() + self.grace:
            raise BaselineOverrun(
                f"stopped after fold {self.done} of {self.n_folds}: the other {remaining} would take "
                f"~{projected:.0f} s, past {self.bound}"
            )

    def during_fold(self, share: float | None) -> None:
        """Inside a fold: `share` of its fit is done (None: unknown, the fit may end any time;
        then it is stopped only once it is already `grace` seconds past)."""
        projected = 0.0
        in_fold = self.clock() - self.fold_started
        # A first step's pace misleads: its fixed costs (binning) and, on the first search of a
        # process, TensorFlow's import holding the GIL beside it (10 iterations on 25 rows took
        # 1.6 s, projecting 16 s for a fit of well under one).
        if share and in_fold >= MIN_PROJECTED_SECONDS:
            fold_seconds = in_fold / share
            projected = fold_seconds * (1 - share) + fold_seconds * (self.n_folds - self.done - 1)
        if projected > self.seconds_left() + self.grace:
            raise BaselineOverrun(
                f"stopped during fold {self.done + 1} of {self.n_folds}: the rest would take "
                f"~{projected:.0f} s, past {self.bound}"
            )


def _run_keras(
    config,
    prepared: Prepared,
    record,
    adopt,
    reporter,
    output_dir: Path,
    keras_deadline,
    known: set[str],
    capacity=None,
) -> str:
    """Capacity check (`capacity`, None: not asked for), then the Optuna search (with
    `config.workers - 1` worker processes).

    `record` takes the main process's finished trials; `adopt` those the workers finished.
    After `config.trials_per_process` trials, fresh worker processes carry the search on.
    `keras_deadline(in_flight=...)` (None: no time limit) is re-read after each trial: a finished
    trial can move it earlier, since the final model may have to build that trial's networks
    and score the test rows with them (at their measured prediction time).
    """
    from autodl.tuning.engine import HANDOVER, Budget, enqueue_warm_start, open_study, run_keras_search
    from autodl.tuning.workers import WorkerPayload, Workers

    deadline = None if keras_deadline is None else keras_deadline()
    if deadline is not None and deadline - time.monotonic() <= 1:
        return "time limit reached before the Keras search"
    if prepared.space is None:
        reporter.info(
            "capacity check skipped: a Keras Tuner hypermodel has no declared largest configuration"
        )
    elif capacity is not None:
        report = capacity.report(deadline)
        if not report.passed:
            reporter.note(report.describe())
            return (
                "the Keras search was skipped: the largest network in the space cannot fit even a small sample, "
                "so the data or the space is wrong (check the target and the space's ranges; --no-capacity-check skips this)"
            )
        reporter.info(report.describe())
        # a check still tracing its network when the deadline came is waited for (~1-3 s)
        if deadline is not None and deadline - time.monotonic() <= 1:
            return "time limit reached during the capacity check, before the Keras search"
    study = open_study(
        storage_path=output_dir / "study.journal",
        study_name=config.study_name or "autodl",
        metric=prepared.metric,
        seed=config.seed,
        resume=config.resume,
        sampler=config.sampler,
        pruner=config.pruner,
    )
    if config.resume:
        _record_killed_trials(study, known, record)
    enqueue_warm_start(study, prepared.trials)
    reporter.phase("keras", config.trials, None if deadline is None else deadline - time.monotonic())
    payload = partial(
        WorkerPayload,
        config=config,
        data=prepared.dev,
        metric_name=prepared.metric.name,
        output_dir=output_dir,
        deadline=deadline,
    )
    workers = Workers(first_index=config.workers)
    for index in range(1, config.workers):
        workers.start(payload(index))

    # This process's trials stop at a deadline that leaves room for the Keras members it can have;
    # other processes keep `deadline`, which leaves room for the most an ensemble takes.
    budget = Budget(config.trials, None if deadline is None else keras_deadline(in_flight=config.workers))

    def on_outcome(outcome: CandidateOutcome, cv: CVResult | None) -> None:
        record(outcome, cv)
        for found in workers.poll():
            adopt(found)
        if keras_deadline is not None:  # never later: a trial kept may be one more final member
            budget.deadline = min(budget.deadline, keras_deadline(in_flight=config.workers))

    try:
        reason = run_keras_search(
            study,
            trials=prepared.trials,
            data=prepared.dev,
            metric=prepared.metric,
            budget=budget,
            seed=config.seed,
            on_outcome=on_outcome,
            process_trials=config.trials_per_process,
        )
        if reason == HANDOVER:  # this process ran its share: a fresh one goes on with the search
            workers.take_over(payload(0))
        workers.wait(adopt, deadline)
        if reason == HANDOVER:
            reason = workers.stop_reason or "a trial process ended with an error"
        if workers.exit_codes:
            reporter.note(
                f"{len(workers.exit_codes)} trial process(es) ended with an error (exit codes {workers.exit_codes})"
            )
    except BaseException:
        workers.stop()
        raise
    finally:
        for found in workers.poll():
            adopt(found)
    return reason


def _record_killed_trials(study, known: set[str], record) -> None:
    """Trials an earlier process finished in the study but never stored count toward --trials.

    A kill mid-trial leaves it failed; a full disk can stop the process after Optuna recorded a
    trial complete but before its models were saved: it is listed with its CV scores, no model.
    """
    import optuna

    states = {optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.COMPLETE: "complete"}
    for trial in study.get_trials(deepcopy=False, states=tuple(states)):
        name = f"keras_trial_{trial.number}"
        if name in known:
            continue
        state = states[trial.state]
        reason = trial.user_attrs.get("reason", "the trial failed in an earlier run")
        if state == "complete":
            reason = "its models were not saved before the earlier run stopped; scores kept"
        record(
            CandidateOutcome(
                name,
                "keras",
                dict(trial.params),
                state,
                reason,
                fold_scores=list(trial.user_attrs.get("fold_scores", [])),
                fit_seconds=float(trial.user_attrs.get("fit_seconds", 0.0)),
                trial_number=trial.number,
            ),
            None,
        )


def _held_out_predictions(
    dev: DevData, oof: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The out-of-fold predictions and targets of the rows some fold held out: every development
    row, except the first block of time-ordered folds, which has no out-of-fold prediction."""
    rows = dev.held_out
    if len(rows) == len(dev.y):
        return oof, dev.y
    return {name: values[rows] for name, values in oof.items()}, dev.y[rows]


def _resampling_clusters(dev: DevData) -> np.ndarray | None:
    """Labels of the held-out rows that the ensemble's bootstrap must draw together: the groups
    of a grouped search; blocks of about sqrt(n) consecutive rows of a time-ordered one (nearby
    rows are alike); None when rows are independent draws."""
    rows = dev.held_out
    if dev.groups is not None:
        return dev.groups[rows]
    if dev.times is None:
        return None
    block = max(1, math.ceil(math.sqrt(len(rows))))
    clusters = np.empty(len(rows), dtype=np.int64)
    clusters[np.argsort(dev.times[rows], kind="stable")] = np.arange(len(rows)) // block
    return clusters


def _finalize(
    config, prepared: Prepared, pool, outcomes, output_dir, stop_reason, interrupted, started, tracker
) -> SearchResult:
    dev, metric, dataset = prepared.dev, prepared.metric, prepared.dataset
    oof, y_held_out = _held_out_predictions(dev, pool.oof)
    if config.final == "ensemble":
        weights = select_ensemble(
            {name: oof[name] for name in pool.blendable()},
            y_held_out,
            metric,
            seed=config.seed,
            keep_alone=REFERENCE,
            clusters=_resampling_clusters(dev),
        )
        keras = {name for name in weights if pool.family[name] == "keras"}
        weights = keep_heaviest(weights, keras, MAX_KERAS_MEMBERS)
    else:
        weights = {pool.best(): 1.0}
    cv_score = metric(y_held_out, blend(oof, weights))
    no_better = set(weights) == {REFERENCE}
    model = TabularModel(
        members=[Member(name, weight, pool.fold_models(name)) for name, weight in weights.items()],
        task=dataset.task.kind,
        classes=dataset.task.classes,
        columns=[str(c) for c in dataset.features.columns],
        target=dataset.target_name,
        set_aside=(*config.drop_columns, *([config.group_column] if config.group_column else [])),
    )
    test_scores, test_evaluation = _score_test(model, dataset, prepared.holdout.test, metric)
    decisions = {
        "task": dataset.task.kind,
        "task_reason": dataset.task.reason,
        "metric": metric.name,
        "metric_reason": prepared.metric_reason,
        "stop_reason": stop_reason,
        "final_members": weights,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    if no_better:
        decisions["warning"] = (
            f"no model beat the dummy reference in CV, so the final model is it ({'the class shares' if dataset.task.is_classification else 'the mean'}): "
            "the features may not predict the target, or the time limit was too short for this table (raise --time-limit)"
        )
    result = SearchResult(
        task=dataset.task.kind,
        metric=metric.name,
        greater_is_better=metric.greater_is_better,
        outcomes=outcomes,
        final_name="ensemble" if len(weights) > 1 else next(iter(weights)),
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
        test_evaluation=test_evaluation,
        cv_evaluation={"y_true": y_held_out, "scores": blend(oof, weights)},
    )
    saved = {name: pool.store.saved_parts(name) for name in weights}
    model.save(
        result.model_dir,
        extra={"metric": metric.name, "cv_score": cv_score, "test_scores": test_scores},
        saved={name: where for name, where in saved.items() if where is not None},
    )
    return result


def _score_test(
    model: TabularModel, dataset: Dataset, test_rows: np.ndarray, metric: Metric
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """The one and only use of the test rows: scores, and the predictions behind them for reports."""
    if len(test_rows) == 0:
        return {}, None
    scores = model.scores(dataset.features.iloc[test_rows])
    y_true = dataset.y[test_rows]
    return score_all(dataset.task.kind, metric, y_true, scores), {"y_true": y_true, "scores": scores}


def _prepare_output(requested: Path | None, *, resume: bool) -> Path:
    folder = Path(requested) if requested else Path("autodl-runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if resume and requested is None:
        raise ConfigError(
            "--resume needs the output folder of the search to continue", "pass --output DIR with --resume"
        )
    if not resume and folder.exists() and any(folder.iterdir()):
        hint = (
            "pass --resume to continue the search stored there, or"
            if (folder / "search.json").exists()
            else "pass"
        )
        raise ConfigError(f"output folder {folder} exists and is not empty", f"{hint} a new --output folder")
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
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_DISK:
        raise ConfigError(
            f"only {free / 2**20:.0f} MiB free on the disk holding {folder}; a search needs at least "
            f"{MIN_FREE_DISK / 2**20:.0f} MiB for its candidates and final model",
            "free some space, or pass an --output folder on another disk",
        )
    return folder


def _summary(prepared: Prepared) -> dict:
    dataset = prepared.dataset
    return {
        "source": prepared.source,
        "rows": int(len(prepared.frame)),
        "columns": int(prepared.frame.shape[1]),
        "target": dataset.target_name,
        "task": dataset.task.kind,
        "task_reason": dataset.task.reason,
        "classes": [str(c) for c in dataset.task.classes] if dataset.task.classes else None,
        "metric": prepared.metric.name,
        "default_metric": DEFAULT_METRIC[dataset.task.kind],
        "rows_missing_target": dataset.n_missing_target,
        "dev_rows": len(prepared.holdout.dev),
        "test_rows": len(prepared.holdout.test),
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
