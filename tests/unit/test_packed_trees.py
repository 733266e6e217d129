"""HistGradientBoosting baselines are written as a few arrays and load back predicting the same."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier

from autodl.candidates.packed_trees import (
    PackedHistGradientBoostingClassifier,
    PackedHistGradientBoostingRegressor,
)
from autodl.model import _load_skops, dump_skops


def data(classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column and a 6-level category (so some trees split on category bitsets)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=300)
    colour = rng.integers(0, 6, size=300)
    signal = x + (colour % 3 == 0) - 0.5 * (colour == 4) + rng.normal(scale=0.3, size=300)
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1])) if classes else signal
    return np.column_stack([x, colour]).astype(float), y


def npy_members(path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(name.endswith(".npy") for name in archive.namelist())


@pytest.mark.parametrize("classes", [2, 4, 0])
def test_a_packed_model_loads_back_with_the_same_predictions(classes, tmp_path):
    X, y = data(classes)
    cls = PackedHistGradientBoostingClassifier if classes else PackedHistGradientBoostingRegressor
    model = cls(max_iter=40, categorical_features=[False, True], random_state=0).fit(X, y)
    assert any(len(tree.raw_left_cat_bitsets) for it in model._predictors for tree in it)
    expected = model.predict_proba(X) if classes else model.predict(X)

    dump_skops(model, tmp_path / "model.skops")
    loaded = _load_skops(tmp_path / "model.skops")

    assert type(loaded) is cls
    again = loaded.predict_proba(X) if classes else loaded.predict(X)
    np.testing.assert_array_equal(again, expected)
    assert loaded.n_iter_ == model.n_iter_ == len(loaded._predictors)
    # writing it took nothing from the fitted model in memory
    np.testing.assert_array_equal(model.predict_proba(X) if classes else model.predict(X), expected)


def test_the_trees_are_written_as_a_handful_of_arrays_not_three_per_tree(tmp_path):
    X, y = data(4)
    plain = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)
    packed = PackedHistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)
    dump_skops(plain, tmp_path / "plain.skops")
    dump_skops(packed, tmp_path / "packed.skops")
    assert npy_members(tmp_path / "plain.skops") >= 3 * 4 * 50
    assert npy_members(tmp_path / "packed.skops") < 30


def test_a_file_written_by_dump_skops_is_one_skops_itself_reads(tmp_path):
    X, y = data(2)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
    dump_skops(model, tmp_path / "ours.skops")
    sio.dump(model, tmp_path / "theirs.skops")
    ours = sio.load(tmp_path / "ours.skops", trusted=sio.get_untrusted_types(file=tmp_path / "ours.skops"))
    assert npy_members(tmp_path / "ours.skops") == npy_members(tmp_path / "theirs.skops")
    np.testing.assert_array_equal(ours.predict_proba(X), model.predict_proba(X))
