"""Grouped and time-ordered splits (--group-column, --time-column): the scores are those of new
groups, or of later rows, because no group straddles a split and no fold trains on its future."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autodl.config import SearchConfig
from autodl.data.dataset import build_dataset
from autodl.errors import ConfigError, DataError
from autodl.orchestrate import _resampling_clusters
from autodl.split import check_split_classes, held_out_rows, holdout_split, make_folds
from autodl.tuning.cv import DevData
from tests.cli_harness import QUICK, run_cli


def _groups(n_groups: int = 40, per_group: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.integers(0, 2, size=len(groups))
    return groups, y


@pytest.mark.parametrize("stratify", [True, False])
def test_grouped_holdout_and_folds_keep_every_group_on_one_side(stratify):
    groups, y = _groups()
    holdout = holdout_split(y, test_size=0.2, stratify=stratify, seed=0, groups=groups)
    assert not set(groups[holdout.dev]) & set(groups[holdout.test])
    assert 0.1 < len(holdout.test) / len(y) < 0.35
    dev_groups = groups[holdout.dev]
    folds = make_folds(y[holdout.dev], folds=4, repeats=2, stratify=stratify, seed=0, groups=dev_groups)
    assert len(folds) == 8
    for fold in folds:
        assert not set(dev_groups[fold.train]) & set(dev_groups[fold.valid])
    for repeat in (0, 1):  # each repeat holds out every development row once
        valid = np.concatenate([f.valid for f in folds if f.repeat == repeat])
        assert np.array_equal(np.sort(valid), np.arange(len(holdout.dev)))
    first, second = ([tuple(f.valid) for f in folds if f.repeat == r] for r in (0, 1))
    assert first != second  # repeats reshuffle which groups go together


def test_time_ordered_holdout_is_the_latest_rows_with_ties_on_the_test_side():
    times = np.array([5, 1, 3, 3, 9, 7, 7, 2, 8, 8], dtype=float)
    holdout = holdout_split(np.zeros(10), test_size=0.25, stratify=False, seed=0, times=times)
    # 3 rows would be the latest 25%, but 8 is at the boundary twice: both go to the test
    assert sorted(times[holdout.test]) == [8, 8, 9]
    assert times[holdout.dev].max() < times[holdout.test].min()


def test_forward_chaining_folds_train_on_the_past_and_score_the_next_block():
    rng = np.random.default_rng(0)
    times = rng.permutation(120).astype(float)
    folds = make_folds(np.zeros(120), folds=5, repeats=1, stratify=False, seed=0, times=times)
    assert len(folds) == 5
    for previous, fold in zip([None, *folds], folds, strict=False):
        assert times[fold.train].max() < times[fold.valid].min()
        if previous is not None:  # training grows by the block scored before
            assert set(previous.train) | set(previous.valid) == set(fold.train)
    earliest = np.argsort(times)[:20]  # the first of 6 blocks is never held out
    assert not set(earliest) & set(held_out_rows(folds))
    assert len(held_out_rows(folds)) == 100


def test_forward_chaining_with_too_few_distinct_times_says_so():
    times = np.repeat([1.0, 2.0, 3.0], 10)
    with pytest.raises(DataError, match="too few distinct times \\(3\\) for 5 time-ordered folds"):
        make_folds(np.zeros(30), folds=5, repeats=1, stratify=False, seed=0, times=times)


def test_a_time_ordered_split_with_one_class_in_the_test_rows_or_a_fold_is_refused():
    """Its ROC AUC would be undefined: the search had ended with a test score of nan."""
    times = np.arange(80, dtype=float)
    late_negatives = np.r_[np.arange(60) % 2, np.zeros(20, dtype=int)]
    holdout = holdout_split(late_negatives, test_size=0.25, stratify=True, seed=0, times=times)
    folds = make_folds(
        late_negatives[holdout.dev], folds=3, repeats=1, stratify=True, seed=0, times=times[holdout.dev]
    )
    with pytest.raises(DataError, match="the test rows of the time-ordered split hold one class only"):
        check_split_classes(late_negatives, holdout, folds, "time-ordered")
    late_positives = np.r_[np.zeros(40, dtype=int), np.ones(20, dtype=int), np.arange(20) % 2]
    holdout = holdout_split(late_positives, test_size=0.25, stratify=True, seed=0, times=times)
    folds = make_folds(
        late_positives[holdout.dev], folds=3, repeats=1, stratify=True, seed=0, times=times[holdout.dev]
    )
    with pytest.raises(DataError, match="fold 1 of the time-ordered folds trains on rows of one class only"):
        check_split_classes(late_positives, holdout, folds, "time-ordered")


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(n // 4), 4)
    return pd.DataFrame(
        {
            "person": person,
            "day": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
        }
    )


def test_the_group_column_decides_the_split_and_is_not_a_feature():
    dataset = build_dataset(_frame(), target="y", group_column="person")
    assert "person" not in dataset.features.columns
    assert len(np.unique(dataset.groups)) == 30
    timed = build_dataset(_frame(), target="y", time_column="day")
    assert "day" in timed.features.columns
    assert np.all(np.diff(timed.times) > 0)


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (
            lambda f: f.assign(person=f.person.where(f.index != 3)),
            {"group_column": "person"},
            "group column 'person' has 1 missing values",
        ),
        (
            lambda f: f.assign(person=f.index % 3),
            {"group_column": "person"},
            "has 3 groups; 5-fold CV on whole groups with a test split needs at least",
        ),
        (
            lambda f: f.assign(day=f.day.where(f.index != 7, "soon")),
            {"time_column": "day"},
            "time column 'day' has 1 value that is not a number or date \\(first: 'soon' at file line 9\\)",
        ),
        (lambda f: f, {"group_column": "y"}, "--group-column 'y' is the target"),
        (lambda f: f, {"time_column": "when"}, "--time-column column 'when' not found"),
    ],
)
def test_unusable_group_or_time_columns_are_named_with_the_fix(change, kwargs, message):
    with pytest.raises(DataError, match=message):
        build_dataset(change(_frame()), target="y", **kwargs)


def test_grouping_and_time_order_are_exclusive_and_time_order_is_not_repeated():
    with pytest.raises(ConfigError, match="cannot be combined"):
        SearchConfig(target="y", group_column="a", time_column="b")
    with pytest.raises(ConfigError, match="time-ordered folds \\(--time-column\\) have one order"):
        SearchConfig(target="y", time_column="b", repeats=2)


def test_the_ensemble_resamples_whole_groups_or_blocks_of_consecutive_times():
    groups, y = _groups()
    times = np.random.default_rng(1).permutation(len(y)).astype(float)
    folds = make_folds(y, folds=4, repeats=1, stratify=False, seed=0, groups=groups)
    grouped = DevData(pd.DataFrame({"x": y}), y, folds, None, "binary", 2, groups=groups)
    np.testing.assert_array_equal(_resampling_clusters(grouped), groups[grouped.held_out])
    folds = make_folds(y, folds=4, repeats=1, stratify=False, seed=0, times=times)
    ordered = DevData(pd.DataFrame({"x": y}), y, folds, None, "binary", 2, times=times)
    clusters = _resampling_clusters(ordered)
    held_times = times[ordered.held_out]
    block = int(np.ceil(np.sqrt(len(held_times))))
    assert np.bincount(clusters).max() == block
    for label in np.unique(clusters):  # each block is a run of consecutive times
        inside = np.sort(held_times[clusters == label])
        others = held_times[clusters != label]
        assert not ((others > inside[0]) & (others < inside[-1])).any()
    rows = DevData(pd.DataFrame({"x": y}), y, folds, None, "binary", 2)
    assert _resampling_clusters(rows) is None


def test_a_time_ordered_search_scores_its_blend_on_the_rows_some_fold_held_out(tmp_path):
    """The earliest block has no out-of-fold prediction: scoring it as zeros would ruin the CV
    estimate and the ensemble selection."""
    frame = _frame(200)
    frame["y"] = frame["x"] * 3 + 10  # far from zero: zeros in place of predictions would show
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "run"
    outcome = run_cli(
        "search", tmp_path / "t.csv", "--target", "y", "--time-column", "day", *QUICK, "-o", out
    )
    assert outcome.code == 0, outcome.text
    shown = " ".join(outcome.stdout.split())  # the terminal wraps lines
    assert "2 forward-chaining folds by 'day'" in shown
    assert "40 test rows set aside (the latest by 'day')" in shown
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cv_score"] < 0.5  # RMSE of a near-exact linear fit, not of zeros against ~10
    assert summary["summary"]["test_rows"] == 40


def test_a_grouped_search_runs_from_the_command_line(tmp_path):
    frame = _frame(160)
    frame["y"] = np.where(frame["x"] > 0, "yes", "no")
    frame.to_csv(tmp_path / "g.csv", index=False)
    outcome = run_cli(
        "search",
        tmp_path / "g.csv",
        "--target",
        "y",
        "--group-column",
        "person",
        *QUICK,
        "-o",
        tmp_path / "run",
    )
    assert outcome.code == 0, outcome.text
    shown = " ".join(outcome.stdout.split())  # the terminal wraps lines
    assert "set aside (whole groups of 'person')" in shown
    assert "each 'person' in one fold" in shown

    # the training file predicts without a warning: the group column is known to the model as
    # one the search used to split, not a column it never saw
    predicted = run_cli("predict", tmp_path / "run" / "model", tmp_path / "g.csv", "-o", tmp_path / "p.csv")
    assert predicted.code == 0, predicted.text
    assert "ignoring" not in predicted.stderr
    frame.assign(note="x").to_csv(tmp_path / "e.csv", index=False)
    predicted = run_cli("predict", tmp_path / "run" / "model", tmp_path / "e.csv", "-o", tmp_path / "p.csv")
    assert "ignoring 1 column(s) unknown to the model: note" in " ".join(predicted.stderr.split())


def test_time_ordered_networks_early_stop_on_the_latest_of_their_training_rows():
    from autodl.candidates.keras_model import inner_split

    times = np.random.default_rng(0).permutation(100).astype(float)
    train, valid = inner_split(np.zeros(100), task="regression", fraction=0.2, seed=0, times=times)
    assert sorted(times[valid]) == list(range(80, 100))
    assert len(train) == 80


def test_the_estimators_keep_each_group_in_one_fold_when_given_groups(tmp_path):
    """A forest memorizes a per-person code: shuffled folds score it on people it trained on
    (an optimistic CV score), grouped folds on new people (no better than the mean)."""
    from autodl import AutoDLRegressor

    rng = np.random.default_rng(0)
    person = np.repeat(np.arange(40), 6)
    X = pd.DataFrame({"code": rng.normal(size=40)[person]})
    y = rng.normal(size=40)[person] + rng.normal(scale=0.05, size=len(person))
    settings = {"trials": 0, "folds": 2, "time_limit": 60}
    shuffled = AutoDLRegressor(**settings, output_dir=tmp_path / "shuffled").fit(X, y)
    grouped = AutoDLRegressor(**settings, output_dir=tmp_path / "grouped").fit(X, y, groups=person)
    assert shuffled.result_.cv_score < 0.5 * np.std(y)
    assert grouped.result_.cv_score > 0.9 * np.std(y)
    assert grouped.predict(X).shape == (len(X),)  # the groups are not a feature to pass again
    with pytest.raises(DataError, match="the group column 'groups' has 1 groups"):
        AutoDLRegressor(**settings, output_dir=tmp_path / "one").fit(X, y, groups=np.zeros(len(X)))


def test_the_estimators_take_a_time_column_of_x(tmp_path):
    from autodl import AutoDLRegressor

    X = pd.DataFrame({"day": np.arange(60.0), "x": np.random.default_rng(0).normal(size=60)})
    with pytest.raises(DataError, match="--time-column column 'when' not found"):
        AutoDLRegressor(time_column="when", trials=0, output_dir=tmp_path / "a").fit(X, X["x"])
    model = AutoDLRegressor(time_column="day", trials=0, folds=2, output_dir=tmp_path / "b").fit(
        X, 3 * X["x"]
    )
    assert model.result_.decisions["task"] == "regression"
    assert model.result_.cv_score < 0.5  # scored on the rows some fold held out, not on zeros
