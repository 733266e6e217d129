"""Baselines keep to their share of --time-limit: a slow one is stopped between folds, or
between the steps of a fit in steps."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from autodl.candidates.base import Candidate
from autodl.config import SearchConfig
from autodl.data.dataset import build_dataset
from autodl.events import Reporter
from autodl.metrics import resolve_metric
from autodl.orchestrate import BaselineOverrun, OverrunGuard, _run_baselines
from autodl.split import make_folds
from autodl.tuning.cv import DevData


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_guard_stops_a_cv_whose_remaining_folds_would_end_past_the_share():
    clock = FakeClock()
    guard = OverrunGuard(5, lambda: 20.0 - clock.now, "the share", grace=6.0, clock=clock)
    clock.now = 10.0  # one fold took 10 s: four more would take ~40 s, the share has 10 s (+6) left
    with pytest.raises(
        BaselineOverrun, match="stopped after fold 1 of 5: the other 4 would take ~40 s, past the share"
    ):
        guard(0, 0.8)


def test_guard_lets_a_cv_that_fits_finish():
    clock = FakeClock()
    guard = OverrunGuard(5, lambda: 30.0 - clock.now, "the share", grace=3.0, clock=clock)
    for fold in range(5):  # 6 s per fold: 30 s in all, within the share plus grace at every check
        clock.now += 3.0
        guard.during_fold(0.5)
        clock.now += 3.0
        guard(fold, 0.8)


def test_guard_stops_a_fit_in_steps_inside_its_first_fold():
    # 100 classes: the defaults' first 10 of 100 iterations took 2 s, so a fold takes ~20 s
    clock = FakeClock()
    guard = OverrunGuard(5, lambda: 30.0 - clock.now, "the time limit", grace=3.0, clock=clock)
    clock.now = 1.0
    guard.during_fold(0.05)  # too early to judge its pace (fixed costs, a busy GIL)
    clock.now = 2.0
    with pytest.raises(BaselineOverrun, match="stopped during fold 1 of 5: the rest would take ~98 s"):
        guard.during_fold(0.1)


def test_guard_lets_a_fit_of_unknown_length_run_until_it_is_past_the_bound():
    clock = FakeClock()
    guard = OverrunGuard(5, lambda: 10.0 - clock.now, "the share", grace=1.0, clock=clock)
    clock.now = 10.5
    guard.during_fold(None)  # early stopping may end it any moment: not past the bound + grace yet
    clock.now = 11.5
    with pytest.raises(BaselineOverrun, match="stopped during fold 1 of 5"):
        guard.during_fold(None)


class SlowDummy(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        time.sleep(0.4)
        return super().fit(X, y, sample_weight)


def slow(name: str) -> Candidate:
    return Candidate(name, "baseline", "none", lambda profile: SlowDummy(strategy="prior"), {})


@pytest.fixture
def prepared():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100), "y": rng.choice(["a", "b"], size=100)})
    dataset = build_dataset(frame, target="y", folds=5, test_size=0.0)
    folds = make_folds(dataset.y, folds=5, repeats=1, stratify=True, seed=0)
    dev = DevData(dataset.features, dataset.y, folds, dataset.profile, "binary", 2)
    return SimpleNamespace(dev=dev, metric=resolve_metric("binary", None))


def run(prepared, candidates, have_model: bool, time_limit: float) -> dict[str, tuple[str, str]]:
    recorded = {}
    deadline = time.monotonic() + time_limit
    _run_baselines(
        candidates,
        prepared,
        lambda outcome, cv: recorded.__setitem__(outcome.name, (outcome.state, outcome.reason)),
        Reporter(),
        SearchConfig(target="y", time_limit=time_limit),
        lambda: deadline - time.monotonic(),
        have_model=lambda: have_model,
    )
    return recorded


def test_a_slow_baseline_is_stopped_between_folds_once_a_model_exists(prepared):
    started = time.monotonic()
    recorded = run(prepared, [slow("slow")], have_model=True, time_limit=2.0)  # share 0.8 s, grace 0.2 s
    assert recorded["slow"][0] == "pruned"
    assert "stopped after fold 1 of 5" in recorded["slow"][1]
    assert time.monotonic() - started < 1.5  # not the ~2 s of five folds


def test_the_first_model_may_overrun_the_time_limit_by_up_to_its_length(prepared):
    recorded = run(prepared, [slow("slow")], have_model=False, time_limit=1.2)  # five folds: ~2 s
    assert recorded["slow"] == ("complete", "")


def test_until_a_model_completes_no_baseline_is_skipped(prepared):
    # The share (40% of 0.5 s) is spent by the first fold; the next baseline still runs: a
    # search must end with a model.
    recorded = run(prepared, [slow("slower"), slow("slow")], have_model=False, time_limit=0.5)
    assert recorded["slower"][0] == "pruned" and "past twice the time limit" in recorded["slower"][1]
    assert recorded["slow"][0] == "pruned" and "skipped" not in recorded["slow"][1]


def test_a_first_model_that_would_end_past_twice_the_time_limit_is_stopped(prepared):
    started = time.monotonic()
    recorded = run(prepared, [slow("slow")], have_model=False, time_limit=0.6)
    assert recorded["slow"][0] == "pruned"
    assert "stopped after fold 1 of 5" in recorded["slow"][1]
    assert time.monotonic() - started < 1.0


def test_gradient_boosting_with_many_classes_is_stopped_inside_its_first_fold():
    # 100 classes x 100 iterations = 10,000 trees a fold (~20 s here): stopped between steps
    from autodl.candidates.baselines import baseline_candidates

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1600), "y": rng.integers(0, 100, size=1600)})
    frame["x"] += frame["y"] * 0.05
    dataset = build_dataset(frame, target="y", task="multiclass", folds=5, test_size=0.0)
    folds = make_folds(dataset.y, folds=5, repeats=1, stratify=True, seed=0)
    many = SimpleNamespace(
        dev=DevData(dataset.features, dataset.y, folds, dataset.profile, "multiclass", 100),
        metric=resolve_metric("multiclass", None),
    )
    hgb = [c for c in baseline_candidates("multiclass", 1600, seed=0) if c.name == "hist_gradient_boosting"]
    started = time.monotonic()
    recorded = run(many, hgb, have_model=False, time_limit=4.0)
    assert recorded["hist_gradient_boosting"][0] == "pruned"
    assert "stopped during fold 1 of 5" in recorded["hist_gradient_boosting"][1]
    assert time.monotonic() - started < 8.0


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_first_model_is_gradient_boosting_on_large_tables_and_linear_on_small_ones(task):
    # Until a model completes, the guard's bound is the whole time limit, not the baselines'
    # share: on data large for the time limit that model should be the strongest baseline.
    from autodl.candidates.baselines import baseline_candidates

    names = [c.name for c in baseline_candidates(task, n_rows=50_000, seed=0)]
    assert names[:3] == ["dummy", "hist_gradient_boosting", "linear"]
    small = [c.name for c in baseline_candidates(task, n_rows=1000, seed=0)]
    assert small[:3] == ["dummy", "linear", "hist_gradient_boosting"]  # well under a second there


def test_a_never_negative_regression_target_adds_a_poisson_gradient_boosting():
    from autodl.candidates.baselines import baseline_candidates

    def names(task, nonnegative):
        return [c.name for c in baseline_candidates(task, 1000, seed=0, nonnegative_target=nonnegative)]

    counts = names("regression", True)
    assert counts.index("hist_gradient_boosting_poisson") == counts.index("hist_gradient_boosting_tuned") + 1
    assert "hist_gradient_boosting_poisson" not in names("regression", False)
    assert "hist_gradient_boosting_poisson" not in names("binary", True)


def test_a_multiclass_target_adds_extra_trees_grown_to_single_row_leaves():
    from autodl.candidates.baselines import FOREST_FULL_ROWS, baseline_candidates, select_baselines
    from autodl.errors import ConfigError

    def by_name(task, rows):
        return {c.name: c for c in baseline_candidates(task, rows, seed=0)}

    grown = by_name("multiclass", 1000)["extra_trees_grown"]
    assert (
        grown.params["min_samples_leaf"] == 1
        and by_name("multiclass", 1000)["extra_trees"].params["min_samples_leaf"] == 2
    )
    assert grown.make_estimator(None).min_samples_leaf == 1
    assert "extra_trees_grown" not in by_name("binary", 1000)
    assert "extra_trees_grown" not in by_name("regression", 1000)
    assert "extra_trees_grown" not in by_name("multiclass", FOREST_FULL_ROWS + 1)
    with pytest.raises(ConfigError, match="multiclass"):
        select_baselines(baseline_candidates("binary", 1000, seed=0), ("extra_trees_grown",))


def test_tables_of_more_than_5000_rows_add_a_gradient_boosting_of_larger_trees():
    """63 leaves a tree: 5-fold CV RMSE on bikeshare -5%, DoctorContacts -3%, diamonds -1%; a
    little worse on tables without deep interactions, where the ensemble leaves it out."""
    from autodl.candidates.baselines import baseline_candidates

    def names(rows):
        return [c.name for c in baseline_candidates("regression", rows, seed=0, nonnegative_target=True)]

    large = names(5001)
    assert large[3:6] == [
        "hist_gradient_boosting_tuned",
        "hist_gradient_boosting_deep",
        "hist_gradient_boosting_poisson",
    ]
    assert "hist_gradient_boosting_deep" not in names(5000)


def test_asking_for_a_baseline_this_data_does_not_get_says_why():
    from autodl.candidates.baselines import baseline_candidates, select_baselines
    from autodl.errors import ConfigError

    candidates = baseline_candidates("binary", 1000, seed=0)
    with pytest.raises(ConfigError, match="only for regression targets that are never negative"):
        select_baselines(candidates, ("linear", "hist_gradient_boosting_poisson"))
    with pytest.raises(ConfigError, match="on up to 5,000 rows"):
        select_baselines(baseline_candidates("binary", 50_000, seed=0), ("svm",))
    with pytest.raises(ConfigError, match="on more than 5,000 rows"):
        select_baselines(candidates, ("hist_gradient_boosting_deep",))
    with pytest.raises(ConfigError, match="unknown baseline 'lineer'.*'linear'"):
        select_baselines(candidates, ("lineer",))


def test_test_scoring_time_is_projected_from_the_slowest_out_of_fold_predictions(tmp_path):
    """Each fold model predicts every test row; out of fold it predicted 1/k of the development
    rows. Three slowest candidates stand for the members the final model has not chosen yet."""
    from autodl.pool import CandidatePool
    from autodl.store import RunStore
    from autodl.tuning.cv import CVResult

    pool = CandidatePool(resolve_metric("binary", None), RunStore(tmp_path))
    for name, seconds in {"forest": 2.0, "boosting": 1.0, "linear": 0.5, "knn": 0.1}.items():
        pool.add(
            name, "baseline", CVResult([0.8], np.zeros(300), [], 1.0, predict_seconds=seconds), persist=False
        )
    assert pool.test_scoring_seconds(n_dev=300, n_test=100, n_folds=5, members=3) == pytest.approx(
        3.5 * 5 * 100 / 300
    )


def test_the_keras_search_leaves_the_final_stage_its_time(tmp_path):
    """The time limit covers the final stage too: the Keras search ends early enough for the
    tracker's logging and the test scoring, and says how much it set aside."""
    from autodl.orchestrate import run_search
    from autodl.tracking.base import NullTracker

    class SlowLogging(NullTracker):
        finish_seconds = 29.5

    class Notes(Reporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, message: str) -> None:
            self.lines.append(message)

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.choice(["a", "b"], size=120)})
    config = SearchConfig(
        target="y", time_limit=30.0, baselines=("linear",), tracking=False, output_dir=tmp_path / "run"
    )
    notes = Notes()
    result = run_search(config, frame, reporter=notes, tracker=SlowLogging())
    assert result.decisions["stop_reason"] == "time limit reached before the Keras search"
    assert any("s of the time limit set aside for the final model" in line for line in notes.lines)
    assert not [o for o in result.outcomes if o.family == "keras"]


def test_no_trial_starts_that_could_not_finish_its_first_epoch_in_the_time_left(tmp_path, prepared):
    """A trial started with less time left than any earlier trial needed to train one epoch
    would be cut before it has a model, and its set-up would run past the limit."""
    from autodl.runtime import long_lived_objects_frozen, release_keras_memory
    from autodl.tuning.cv import CVResult
    from autodl.tuning.engine import Budget, open_study, run_keras_search

    class SlowStart:
        """Trials of 1 s: 0.6 s before their first epoch, then 2 epochs of 0.2 s."""

        def warm_start_points(self) -> list[dict]:
            return []

        def evaluate(self, trial, data, metric, *, seed, deadline, report) -> CVResult:
            trial.suggest_float("x", 0.0, 1.0)
            time.sleep(1.0)
            details = [{"train_seconds": 0.4 / 5, "epochs": 2} for _ in range(5)]
            return CVResult([0.7] * 5, np.zeros(len(data.y)), [], 1.0, details)

    release_keras_memory()  # imports Keras now: each trial starts with it, the first would pay the import
    outcomes = []
    study = open_study(
        storage_path=tmp_path / "study.journal", study_name="s", metric=prepared.metric, seed=0, resume=False
    )
    # Frozen first: the search's own freeze then skips the heap, whose full collection takes
    # longer than this test's margins once earlier tests have filled the process.
    with long_lived_objects_frozen():
        reason = run_keras_search(
            study,
            trials=SlowStart(),
            data=prepared.dev,
            metric=prepared.metric,
            budget=Budget(trials=10, deadline=time.monotonic() + 1.6),  # ~0.5 s left after one trial
            seed=0,
            on_outcome=lambda outcome, cv: outcomes.append(outcome),
        )
    assert [o.state for o in outcomes] == ["complete"]
    assert re.fullmatch(
        r"time limit reached: the 0\.\d s left are less than the quickest trial needed for its first epoch \([01]\.\d s\)",
        reason,
    ), reason


def test_no_trial_starts_after_one_the_time_limit_cut_short(tmp_path, prepared):
    """A trial cut by the time limit left less than one of its epochs: the next trial's set-up,
    tracing and first steps would run past the limit (they did, by 3-6 s, on a 17k-row table)."""
    from autodl.tuning.cv import CVResult
    from autodl.tuning.engine import Budget, open_study, run_keras_search

    class CutShort:
        def warm_start_points(self) -> list[dict]:
            return []

        def evaluate(self, trial, data, metric, *, seed, deadline, report) -> CVResult:
            trial.suggest_float("x", 0.0, 1.0)
            details = [{"train_seconds": 0.01, "epochs": 3, "stopped_at_deadline": True} for _ in range(5)]
            return CVResult([0.7] * 5, np.zeros(len(data.y)), [], 0.05, details)

    outcomes = []
    study = open_study(
        storage_path=tmp_path / "study.journal", study_name="s", metric=prepared.metric, seed=0, resume=False
    )
    reason = run_keras_search(
        study,
        trials=CutShort(),
        data=prepared.dev,
        metric=prepared.metric,
        budget=Budget(trials=10, deadline=time.monotonic() + 600),
        seed=0,
        on_outcome=lambda outcome, cv: outcomes.append(outcome),
    )
    assert [o.state for o in outcomes] == ["complete"]
    assert reason == "time limit reached: the last trial stopped with less than one of its epochs left"


def test_seconds_to_first_epoch_is_the_time_outside_training_plus_one_epoch_of_each_fold():
    from autodl.tuning.cv import CVResult

    details = [{"train_seconds": 2.0, "epochs": 4}, {"train_seconds": 3.0, "epochs": 2}]
    result = CVResult([0.5, 0.5], np.zeros(4), [], 7.0, details)
    assert result.seconds_to_first_epoch == pytest.approx(7.0 - 5.0 + 0.5 + 1.5)
    assert CVResult([0.5], np.zeros(4), [], 7.0, [{}]).seconds_to_first_epoch is None


@pytest.mark.parametrize(("after_training", "stops"), [(0.0, False), (5.0, True)])
def test_training_stops_early_enough_for_what_follows_it(after_training, stops):
    """The held-out predictions after the last epoch count against the deadline too."""
    from autodl.candidates.keras_model import _deadline_callback

    stopper = _deadline_callback(time.monotonic() + 2.0, after_training=lambda: after_training)
    stopper.set_model(SimpleNamespace(stop_training=False))
    stopper.on_epoch_begin(0)
    stopper.on_epoch_end(0)  # an epoch of ~0 s: another fits in the 2 s, its predictions may not
    assert stopper.model.stop_training is stops
    assert stopper.hit is stops


def test_the_final_stage_is_given_time_for_the_keras_members_the_final_model_can_hold():
    """The Keras search ends early enough to build the fold networks of the Keras trials kept so
    far plus the one still running (at most MAX_KERAS_MEMBERS): a search with none kept yet does
    not give up time for three. A process keeping the deadline it starts with (workers) leaves
    room for the most."""
    from autodl.orchestrate import KERAS_NETWORK_SECONDS, MAX_KERAS_MEMBERS, _keras_deadline
    from autodl.tracking.base import NullTracker

    pool = SimpleNamespace(kept_keras=0, test_scoring_seconds=lambda *args, **kwargs: 0.0, blendable=dict)
    prepared = SimpleNamespace(
        holdout=SimpleNamespace(dev=np.arange(100), test=np.arange(20)),
        dev=SimpleNamespace(y=np.zeros(100)),
        metric=None,  # no candidates to blend: no selection to time
    )
    config = SearchConfig(target="y", folds=5, repeats=2)

    def reserve(**kwargs) -> float:
        return 100.0 - _keras_deadline(100.0, config, prepared, pool, NullTracker(), **kwargs)

    member = 5 * 2 * KERAS_NETWORK_SECONDS
    assert reserve(in_flight=1) == pytest.approx(member)
    pool.kept_keras = 1
    assert reserve(in_flight=1) == pytest.approx(2 * member)
    assert reserve(in_flight=2) == pytest.approx(3 * member)
    pool.kept_keras = 7
    assert reserve(in_flight=1) == pytest.approx(MAX_KERAS_MEMBERS * member)
    pool.kept_keras = 0
    assert reserve() == pytest.approx(MAX_KERAS_MEMBERS * member)


def test_a_trial_whose_test_scoring_would_not_fit_moves_the_keras_deadline_earlier(monkeypatch, tmp_path):
    """The final model may score the test rows with a finished trial's networks: once that
    projected cost is known, the Keras search ends early enough for it."""
    from autodl.orchestrate import run_search
    from autodl.pool import CandidatePool

    def projected(pool, n_dev, n_test, n_folds, members=3):  # a trial's networks would need 1000 s
        return 1000.0 if "keras" in pool.family.values() else 0.0

    monkeypatch.setattr(CandidatePool, "test_scoring_seconds", projected)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.choice(["a", "b"], size=120)})
    config = SearchConfig(
        target="y",
        time_limit=300.0,
        trials=3,
        folds=2,
        space="mlp_small",
        max_epochs=2,
        baselines=("linear",),
        capacity_check=False,
        tracking=False,
        output_dir=tmp_path / "run",
    )
    result = run_search(config, frame, tracker=None)
    assert [o.state for o in result.outcomes if o.family == "keras"] == ["complete"]
    assert result.decisions["stop_reason"] == "time limit reached"


def test_no_keras_search_starts_when_the_capacity_check_ran_past_its_deadline(tmp_path, prepared):
    """A capacity check cut at the deadline is waited for while it traces its network; the
    search then had announced "-3s left of the time limit" and opened the study anyway."""
    from autodl.orchestrate import _run_keras

    class SlowCheck:
        def report(self, deadline):
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.5)  # ends past the deadline
            return SimpleNamespace(passed=True, describe=lambda: "capacity check: cut short")

    class Phases(Reporter):
        def __init__(self) -> None:
            self.names: list[str] = []

        def phase(self, name, total, seconds_left) -> None:
            self.names.append(name)

    deadline = time.monotonic() + 1.5
    reporter = Phases()
    reason = _run_keras(
        SearchConfig(target="y", time_limit=30.0),
        SimpleNamespace(**vars(prepared), space=object(), trials=None),
        record=None,
        adopt=None,
        reporter=reporter,
        output_dir=tmp_path,
        keras_deadline=lambda **_: deadline,
        known=set(),
        capacity=SlowCheck(),
    )
    assert reason == "time limit reached during the capacity check, before the Keras search"
    assert reporter.names == []
    assert not (tmp_path / "study.journal").exists()


class _QuickTrials:
    """A trial source whose trials complete at once, each having taken `first_epoch` seconds to
    its first epoch (as the study then records); `started` counts them."""

    def __init__(self, first_epoch: float) -> None:
        self.first_epoch = first_epoch
        self.started = 0

    def evaluate(self, trial, data, metric, *, seed, deadline, report):
        from autodl.tuning.cv import CVResult

        self.started += 1
        details = [{"train_seconds": self.first_epoch, "epochs": 1}]
        return CVResult([0.8], np.zeros(4), [], self.first_epoch, fold_details=details)


def _study(tmp_path):
    from autodl.tuning.engine import open_study

    metric = resolve_metric("binary", None)
    return metric, open_study(
        storage_path=tmp_path / "study.journal", study_name="s", metric=metric, seed=0, resume=False
    )


def test_a_process_taking_the_search_over_starts_no_trial_it_cannot_get_through_an_epoch_of(tmp_path):
    """A fresh process (handed the search near its deadline) knows from the study how long the
    quickest trial took to its first epoch, and starts none with less time left than that."""
    from autodl.tuning.engine import Budget, run_keras_search

    metric, study = _study(tmp_path)
    earlier = _QuickTrials(first_epoch=5.0)
    run_keras_search(
        study,
        trials=earlier,
        data=None,
        metric=metric,
        budget=Budget(1, None),
        seed=0,
        on_outcome=lambda *_: None,
    )
    assert earlier.started == 1

    fresh = _QuickTrials(first_epoch=5.0)
    reason = run_keras_search(
        study,
        trials=fresh,
        data=None,
        metric=metric,
        budget=Budget(None, time.monotonic() + 2.0),
        seed=0,
        on_outcome=lambda *_: None,
    )
    assert fresh.started == 0
    assert reason.startswith("time limit reached: the ") and "first epoch (5.0 s)" in reason


def test_near_the_deadline_a_process_goes_on_instead_of_handing_the_search_over(tmp_path):
    """A fresh process would spend what is left importing TensorFlow (PROCESS_START_SECONDS)."""
    from autodl.tuning.engine import HANDOVER, PROCESS_START_SECONDS, Budget, run_keras_search

    metric, study = _study(tmp_path)
    far = run_keras_search(
        study,
        trials=_QuickTrials(0.01),
        data=None,
        metric=metric,
        budget=Budget(10, time.monotonic() + 60 + PROCESS_START_SECONDS),
        seed=0,
        on_outcome=lambda *_: None,
        process_trials=1,
    )
    near_trials = _QuickTrials(0.01)
    near = run_keras_search(
        study,
        trials=near_trials,
        data=None,
        metric=metric,
        budget=Budget(3, time.monotonic() + PROCESS_START_SECONDS / 2),
        seed=0,
        on_outcome=lambda *_: None,
        process_trials=1,
    )
    assert far == HANDOVER
    assert near == "trial budget reached (3 trials)" and near_trials.started == 2
