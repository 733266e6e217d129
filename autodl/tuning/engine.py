"""The Optuna study over Keras models: sampler, pruner, persistent storage, budgets, failures."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autodl.candidates.keras_model import keras_candidate
from autodl.candidates.keras_towers import cross_validate_towers, release_fold_preprocessing
from autodl.errors import ConfigError
from autodl.metrics import Metric
from autodl.result import CandidateOutcome
from autodl.runtime import (
    check_interrupt,
    interrupts_at_safe_points,
    long_lived_objects_frozen,
    release_keras_memory,
)
from autodl.spaces.schema import SearchSpace
from autodl.spaces.suggest import suggest_params, warm_start_points
from autodl.tuning.cv import CVResult, DeadlineReached, DevData, cross_validate

MAX_CONSECUTIVE_FAILURES = 5
# What run_keras_search returns when this process has run its share of trials and a fresh
# process should take over the search (see autodl.tuning.workers).
HANDOVER = "this process ran its share of trials"
FIRST_EPOCH_ATTR = "seconds_to_first_epoch"  # a complete trial's, kept in the study
# What a fresh trial process spends before its first trial (TensorFlow's import: 5-8 s here).
PROCESS_START_SECONDS = 10.0


@dataclass
class Budget:
    """Stop after `trials` finished trials or at the monotonic-clock `deadline`, whichever first.

    The caller may move the deadline between trials (as what the search must leave for later
    becomes known); a running trial keeps the deadline it started with.
    """

    trials: int | None
    deadline: float | None

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def make_sampler(name: str, seed: int):
    """The Optuna sampler for --sampler (TPE multivariate by default)."""
    import optuna

    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is stable in use
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=6)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles the numeric parameters; categorical ones are sampled independently.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.CmaEsSampler(
                seed=seed, warn_independent_sampling=False, n_startup_trials=6
            )
    try:
        import torch  # noqa: F401  (GPSampler's own dependency)
    except ImportError:
        raise ConfigError(
            "--sampler gp needs PyTorch, which autodl does not install by default (it is several GB)",
            "pip install 'autodl[gp]' (or a CPU build: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu), or use --sampler tpe",
        ) from None
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(name: str):
    """The Optuna pruner for --pruner; its steps are training epochs of the fold towers (folds for wilcoxon)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=8)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=8, reduction_factor=3)
    if name == "wilcoxon":
        # Steps are folds (each trial then trains its folds separately): a trial stops once its
        # fold scores are significantly worse than the best trial's on the same folds.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=8, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    *,
    storage_path: Path,
    study_name: str,
    metric: Metric,
    seed: int,
    resume: bool,
    join: bool = False,
    sampler: str = "tpe",
    pruner: str = "median",
):
    """Create (or, with `resume`, reopen) the study in a journal file safe for concurrent workers.

    `join` opens the study a running search created (a parallel worker), leaving its trials alone.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # autodl reports trial failures itself
    storage = JournalStorage(JournalFileBackend(str(storage_path)))
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(sampler, seed),
        pruner=make_pruner(pruner),
        direction=metric.direction,
        load_if_exists=resume or join,
    )
    if resume:  # trials left RUNNING by a killed process will never finish
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            # The reason first: a finished trial can no longer be changed.
            storage.set_trial_user_attr(
                trial._trial_id, "reason", "the search process was killed during this trial"
            )
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study


def finished_trials(study) -> int:
    import optuna

    done = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    return len(study.get_trials(deepcopy=False, states=done))


def _quickest_start(study) -> float:
    """The least time a complete trial of the study needed to get through its first epoch."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return min(
        (t.user_attrs[FIRST_EPOCH_ATTR] for t in complete if FIRST_EPOCH_ATTR in t.user_attrs),
        default=math.inf,
    )


class TrialSource(Protocol):
    """Turns an Optuna trial into a cross-validated model; `report(step, value, text)` may prune."""

    def warm_start_points(self) -> list[dict]: ...

    def evaluate(
        self, trial, data: DevData, metric: Metric, *, seed: int, deadline: float | None, report
    ) -> CVResult: ...


class SpaceTrials:
    """Trials from a declarative space: each configuration is cross-validated as k fold towers.

    Except with the reduce-on-plateau schedule: one plateau schedule over all towers would let
    fold i's held-out labels (which the other towers train and validate on) steer tower i's
    learning rate, so those configurations train their folds as separate fits (not pruned, as
    their fold-indexed steps would not compare with the other trials' epoch steps). With
    `per_fold` (the Wilcoxon pruner) every trial trains its folds separately and reports each
    fold's score at step = fold index.
    """

    def __init__(self, space: SearchSpace, max_epochs: int | None = None, per_fold: bool = False) -> None:
        self.space = space
        self.per_fold = per_fold
        self.fixed = {**space.fixed, **({"max_epochs": max_epochs} if max_epochs else {})}

    def warm_start_points(self) -> list[dict]:
        return warm_start_points(self.space)

    def evaluate(
        self, trial, data: DevData, metric: Metric, *, seed: int, deadline: float | None, report
    ) -> CVResult:
        params = suggest_params(trial, self.space)
        if self.per_fold or params.get("lr_schedule") == "reduce_on_plateau":
            candidate = keras_candidate(
                f"keras_trial_{trial.number}",
                params,
                fixed=self.fixed,
                task=data.task,
                n_classes=data.n_classes,
                seed=seed,
                deadline=deadline,
            )
            if not self.per_fold:
                return cross_validate(candidate, data, metric)

            def after_fold(index: int, fold_score: float) -> None:
                report(index, fold_score, f"fold {index + 1} (score {fold_score:.4f})")

            return cross_validate(candidate, data, metric, after_fold=after_fold)
        sign = 1.0 if metric.greater_is_better else -1.0

        def after_epoch(epoch: int, mean_val_loss: float) -> None:
            # Steps are epochs of the one k-tower fit; the value is the towers' mean best inner
            # validation loss, signed to follow the study's direction.
            report(epoch, -sign * mean_val_loss, f"epoch {epoch + 1} (validation loss {mean_val_loss:.4f})")

        return cross_validate_towers(
            params,
            self.fixed,
            data,
            metric,
            seed=seed,
            deadline=deadline,
            after_epoch=after_epoch,
            builder=self.space.builder,
        )


def enqueue_warm_start(study, trials: TrialSource) -> None:
    """Queue the source's known-good configurations first, in a new study only."""
    if not study.get_trials(deepcopy=False):
        for point in trials.warm_start_points():
            study.enqueue_trial(point, skip_if_exists=True)


def run_keras_search(
    study,
    *,
    trials: TrialSource,
    data: DevData,
    metric: Metric,
    budget: Budget,
    seed: int,
    on_outcome: Callable[[CandidateOutcome, CVResult | None], None],
    process_trials: int | None = None,
) -> str:
    """Run trials until the budget is spent; each finished trial is passed to `on_outcome`.

    `trials` turns an Optuna trial into a cross-validated model (a declarative space, or a Keras
    Tuner hypermodel). Returns why the search stopped, or HANDOVER once this call has finished
    `process_trials` trials with budget left. A trial that raises is recorded as failed with its
    reason and the search goes on; after MAX_CONSECUTIVE_FAILURES failures in a row the search
    stops.
    """
    import optuna

    cv_results: dict[int, CVResult] = {}
    failures_in_a_row = 0
    finished_here = 0
    # The least time an earlier trial needed to get through its first epoch: with less left, a
    # new trial would be cut before it has a model (and its set-up would run past the deadline).
    # Read from the study, so that a process taking the search over near the deadline knows it
    # (a fresh one started a last trial 7 s past a 300 s limit).
    quickest_start = _quickest_start(study)
    stop = {"reason": "time limit reached"}

    def too_little_left() -> str | None:
        """Why no trial can start: less time left than the quickest one needed for its first epoch."""
        left = budget.seconds_left()
        if quickest_start < math.inf and left < quickest_start:
            return (
                f"time limit reached: the {left:.1f} s left are less than the quickest "
                f"trial needed for its first epoch ({quickest_start:.1f} s)"
            )
        return None

    def objective(trial) -> float:
        if budget.seconds_left() <= 0:
            trial.study.stop()
            raise optuna.TrialPruned("time limit reached before the trial started")

        def report(step: int, value: float, described: str) -> None:
            check_interrupt()
            trial.report(value, step=step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {described}: behind the earlier trials")

        try:
            # an interrupt raised amid TensorFlow's tracing or clean-up would leave it corrupted
            with interrupts_at_safe_points():
                release_keras_memory()
                check_interrupt()  # not a trial more once one was requested
                result = trials.evaluate(
                    trial, data, metric, seed=seed + trial.number, deadline=budget.deadline, report=report
                )
        except DeadlineReached as error:
            trial.study.stop()
            trial.set_user_attr("reason", str(error))
            raise optuna.TrialPruned(str(error)) from None
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("reason", str(pruned))
            raise
        except Exception as error:  # a failing trial fails alone; the reason is kept
            trial.set_user_attr("reason", f"{type(error).__name__}: {error}".splitlines()[0][:500])
            raise
        if any(detail.get("stopped_at_deadline") for detail in result.fold_details):
            epochs = result.fold_details[0].get("epochs")
            trial.set_user_attr("reason", f"time limit reached after epoch {epochs}: best epochs so far kept")
        trial.set_user_attr("fold_scores", result.fold_scores)
        trial.set_user_attr("fit_seconds", result.fit_seconds)
        if result.seconds_to_first_epoch is not None:
            trial.set_user_attr(FIRST_EPOCH_ATTR, result.seconds_to_first_epoch)
        cv_results[trial.number] = result
        return result.mean

    def record(study, trial) -> None:
        nonlocal failures_in_a_row, finished_here, quickest_start
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name)
        if state is None:
            return
        result = cv_results.pop(trial.number, None)
        if result is not None and result.seconds_to_first_epoch is not None:
            quickest_start = min(quickest_start, result.seconds_to_first_epoch)
        outcome = CandidateOutcome(
            name=f"keras_trial_{trial.number}",
            family="keras",
            params=dict(trial.params),
            state=state,
            reason=trial.user_attrs.get("reason", ""),
            fold_scores=list(trial.user_attrs.get("fold_scores", [])),
            fit_seconds=float(trial.user_attrs.get("fit_seconds", 0.0)),
            fold_details=result.fold_details if result else [],
            trial_number=trial.number,
        )
        on_outcome(outcome, result)
        failures_in_a_row = failures_in_a_row + 1 if state == "failed" else 0
        finished_here += 1
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            stop["reason"] = f"{failures_in_a_row} trials failed in a row (last: {outcome.reason})"
        elif budget.trials is not None and finished_trials(study) >= budget.trials:
            stop["reason"] = f"trial budget reached ({budget.trials} trials)"
        elif budget.seconds_left() <= 0:
            stop["reason"] = "time limit reached"
        elif result is not None and any(d.get("stopped_at_deadline") for d in result.fold_details):
            # Less than one of its epochs was left: a new trial's set-up, tracing and first
            # steps would run past the limit (measured: 3-6 s on a 17k-row table).
            stop["reason"] = (
                "time limit reached: the last trial stopped with less than one of its epochs left"
            )
        elif (late := too_little_left()) is not None:
            stop["reason"] = late
        elif (
            process_trials is not None
            and finished_here >= process_trials
            and budget.seconds_left()
            > PROCESS_START_SECONDS + (quickest_start if quickest_start < math.inf else 0)
        ):
            # near the deadline this process goes on instead: a fresh one would spend what is
            # left importing TensorFlow, and its last trial would end past the deadline
            stop["reason"] = HANDOVER
        else:
            return
        study.stop()

    if budget.trials is not None and finished_trials(study) >= budget.trials:
        return f"trial budget already reached ({budget.trials} trials)"
    if budget.seconds_left() <= 0:  # e.g. a fresh process that took over just before the deadline
        return "time limit reached"
    if (late := too_little_left()) is not None:
        return late
    timeout = None if budget.deadline is None else max(0.0, budget.seconds_left())
    # each trial starts by freeing the previous models (release_keras_memory), so Optuna need not collect too
    try:
        with long_lived_objects_frozen():
            study.optimize(
                objective, timeout=timeout, callbacks=[record], catch=(Exception,), gc_after_trial=False
            )
    finally:
        release_fold_preprocessing()
    return stop["reason"]
