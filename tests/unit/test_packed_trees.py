"""Tree-ensemble baselines are written as a few arrays and load back predicting the same."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier

from autodl.candidates.packed_trees import (
    PackedExtraTreesClassifier,
    PackedExtraTreesRegressor,
    PackedHistGradientBoostingClassifier,
    PackedHistGradientBoostingRegressor,
    PackedRandomForestClassifier,
    PackedRandomForestRegressor,
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


@pytest.mark.parametrize(
    ("classes", "early_stopping", "max_iter"),
    [(4, False, 100), (2, True, 300), (0, True, 300), (0, False, 60)],
)
def test_a_fit_in_steps_grows_the_model_a_single_fit_grows(classes, early_stopping, max_iter):
    X, y = data(classes)
    cls = PackedHistGradientBoostingClassifier if classes else PackedHistGradientBoostingRegressor

    def make():
        return cls(max_iter=max_iter, early_stopping=early_stopping, validation_fraction=0.2, random_state=0)

    shares = []
    single, stepped = make().fit(X, y), make().fit(X, y, on_progress=shares.append)
    assert stepped.n_iter_ == single.n_iter_
    predict = "predict_proba" if classes else "predict"
    np.testing.assert_array_equal(getattr(stepped, predict)(X), getattr(single, predict)(X))
    assert stepped.get_params() == make().get_params()  # warm_start and max_iter put back
    if not early_stopping:
        assert shares and shares[0] == pytest.approx(10 / max_iter)  # the first step is 10 iterations
    assert all(share is None for share in shares) or not early_stopping


def test_a_fit_in_steps_stops_when_its_watcher_raises():
    X, y = data(4)

    def stop(share):
        raise TimeoutError("past the limit")

    model = PackedHistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    with pytest.raises(TimeoutError):
        model.fit(X, y, on_progress=stop)
    assert model.n_iter_ == 10 and model.max_iter == 100 and not model.warm_start


FORESTS = [
    (PackedRandomForestClassifier, 3),
    (PackedExtraTreesClassifier, 2),
    (PackedRandomForestRegressor, 0),
    (PackedExtraTreesRegressor, 0),
]


@pytest.mark.parametrize(("cls", "classes"), FORESTS)
def test_a_packed_forest_loads_back_with_the_same_trees_and_predictions(cls, classes, tmp_path):
    X, y = data(classes)
    # one thread: a threaded forest sums its trees' predictions in any order (last-bit differences)
    model = cls(n_estimators=40, min_samples_leaf=2, n_jobs=1, random_state=0).fit(X, y)
    expected = model.predict_proba(X) if classes else model.predict(X)

    dump_skops(model, tmp_path / "forest.skops")
    loaded = _load_skops(tmp_path / "forest.skops")

    assert type(loaded) is cls
    assert npy_members(tmp_path / "forest.skops") < 20  # not two per tree
    np.testing.assert_array_equal(loaded.predict_proba(X) if classes else loaded.predict(X), expected)
    np.testing.assert_array_equal(loaded.feature_importances_, model.feature_importances_)
    for ours, theirs in zip(loaded.estimators_, model.estimators_, strict=True):
        assert type(ours) is type(theirs) and ours.random_state == theirs.random_state
        np.testing.assert_array_equal(ours.tree_.value, theirs.tree_.value)
        np.testing.assert_array_equal(ours.tree_.threshold, theirs.tree_.threshold)


def test_a_forest_whose_trees_differ_in_their_settings_is_saved_as_it_is(tmp_path):
    X, y = data(2)
    model = PackedRandomForestClassifier(n_estimators=5, n_jobs=1, random_state=0).fit(X, y)
    model.estimators_[3].max_depth = 2  # not shared any more: no tree may take another's settings

    dump_skops(model, tmp_path / "forest.skops")
    loaded = _load_skops(tmp_path / "forest.skops")

    assert npy_members(tmp_path / "forest.skops") >= 2 * 5
    assert [tree.max_depth for tree in loaded.estimators_] == [None, None, None, 2, None]
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_large_arrays_are_deflated_and_small_ones_stored(tmp_path):
    X, y = data(2)
    X = np.repeat(X, 20, axis=0) + np.random.default_rng(1).normal(scale=0.01, size=(len(X) * 20, 2))
    y = np.tile(y, 20)
    model = PackedExtraTreesClassifier(n_estimators=30, n_jobs=1, random_state=0).fit(X, y)

    dump_skops(model, tmp_path / "forest.skops")

    with zipfile.ZipFile(tmp_path / "forest.skops") as archive:
        members = archive.infolist()
    large = [m for m in members if m.file_size >= 1 << 20]
    assert large and all(m.compress_type == zipfile.ZIP_DEFLATED for m in large)
    assert all(m.compress_type == zipfile.ZIP_STORED for m in members if m.file_size < 1 << 20)
    assert sum(m.compress_size for m in large) < 0.5 * sum(m.file_size for m in large)
    loaded = _load_skops(tmp_path / "forest.skops")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
