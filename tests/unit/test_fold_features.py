"""Candidates of one preprocessing style share each fold's fitted preprocessing and rows."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer

from autodl.candidates.baselines import baseline_candidates
from autodl.data.dataset import build_dataset
from autodl.metrics import resolve_metric
from autodl.split import make_folds
from autodl.tuning.cv import DevData, cross_validate


def dev_data(n: int = 240, seed: int = 0) -> DevData:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    frame["target"] = np.where(frame["x"].fillna(0) + (frame["colour"] == "red") > 0.3, "yes", "no")
    dataset = build_dataset(frame, target="target", task="binary", folds=3, test_size=0.0)
    folds = make_folds(dataset.y, folds=3, repeats=1, stratify=True, seed=0)
    return DevData(dataset.features, dataset.y, folds, dataset.profile, "binary", 2)


@pytest.fixture
def candidates():
    return {c.name: c for c in baseline_candidates("binary", 240, 0)}


def test_a_second_candidate_of_the_style_reuses_each_folds_fit_and_scores_as_alone(candidates, monkeypatch):
    metric = resolve_metric("binary", None)
    alone = cross_validate(candidates["extra_trees"], dev_data(), metric)

    fits = []
    real = ColumnTransformer.fit_transform

    def counted(self, X, y=None, **params):
        fits.append(len(X))
        return real(self, X, y, **params)

    monkeypatch.setattr(ColumnTransformer, "fit_transform", counted)
    data = dev_data()
    first = cross_validate(candidates["random_forest"], data, metric)
    second = cross_validate(candidates["extra_trees"], data, metric)

    assert fits == [len(fold.train) for fold in data.folds]  # fitted on each fold's training rows, once
    for a, b in zip(first.models, second.models, strict=True):
        assert a[0] is b[0]
    np.testing.assert_array_equal(second.oof, alone.oof)
    assert second.fold_scores == alone.fold_scores
    linear = cross_validate(candidates["linear"], data, metric)  # "dense": a preprocessing of its own
    assert len(fits) == 2 * len(data.folds) and linear.models[0][0] is not first.models[0][0]


def test_kept_rows_are_read_only_and_a_pickled_copy_leaves_them_behind(candidates):
    data = dev_data()
    cross_validate(candidates["random_forest"], data, resolve_metric("binary", None))
    preprocess, train = data.fold_features.fitted(data, data.folds[0], "tree", "standard")
    valid, _ = data.fold_features.held_out(data, data.folds[0], "tree", "standard", preprocess)
    for kept in (train, valid):
        with pytest.raises(ValueError, match="read-only"):
            kept[0, 0] = 1.0
    copy = pickle.loads(pickle.dumps(data))
    assert copy.fold_features._fitted == {} and copy.fold_features._held_out == {}
    assert len(data.fold_features._fitted) == len(data.fold_features._held_out) == len(data.folds)


def test_rows_too_large_to_keep_are_transformed_for_each_candidate(candidates, monkeypatch):
    monkeypatch.setattr("autodl.tuning.cv.SHARED_FOLD_FEATURES_BYTES", 0)
    data = dev_data()
    first = cross_validate(candidates["random_forest"], data, resolve_metric("binary", None))
    second = cross_validate(candidates["extra_trees"], data, resolve_metric("binary", None))
    assert first.models[0][0] is not second.models[0][0]
    assert data.fold_features._fitted == {} and data.fold_features._held_out == {}
