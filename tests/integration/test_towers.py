"""The k-tower trick: one Keras model with k towers must behave like k separate fold fits.

Checked here: the scores agree with k separate KerasTabularModel fits; each tower's preprocessing
is fitted on its fold's training rows only; and a tower does not move when the labels of its
fold's held-out rows change (those rows train the other towers, so any coupling between towers
would let held-out labels reach it).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from autodl.candidates import keras_model
from autodl.candidates.keras_model import KerasTabularModel, keras_candidate
from autodl.candidates.keras_towers import cross_validate_towers
from autodl.data.dataset import build_dataset
from autodl.metrics import resolve_metric
from autodl.preprocess import build_preprocessor
from autodl.spaces import load_space
from autodl.spaces.suggest import defaults_point
from autodl.split import make_folds
from autodl.tuning.cv import DeadlineReached, DevData, cross_validate

FOLDS = 5
SPACE = load_space("mlp_small")
PARAMS = {**defaults_point(SPACE), "lr_schedule": "constant"}
FIXED = {**SPACE.fixed, "max_epochs": 12, "patience": 6}
METRIC = resolve_metric("binary", None)


def table(n: int = 600, seed: int = 11) -> pd.DataFrame:
    """A learnable binary problem: two informative numbers (one with gaps), a category, a noise column."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(list("abcd"), size=n)
    logit = 1.6 * x1 - 1.0 * x2 + np.select([group == "a", group == "b"], [1.0, -0.8], 0.0)
    frame = pd.DataFrame(
        {
            "x1": x1.round(4),
            "x2": x2.round(4),
            "group": group,
            "noise": rng.normal(size=n).round(4),
            "target": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )
    frame.loc[rng.random(n) < 0.1, "x2"] = np.nan
    frame.loc[rng.random(n) < 0.05, "group"] = np.nan
    return frame


@pytest.fixture(scope="module")
def dev() -> DevData:
    dataset = build_dataset(table(), target="target", folds=FOLDS, test_size=0.0)
    folds = make_folds(dataset.y, folds=FOLDS, repeats=1, stratify=True, seed=0)
    return DevData(dataset.features, dataset.y, folds, dataset.profile, "binary", 2)


@pytest.fixture(scope="module")
def towers(dev):
    return cross_validate_towers(PARAMS, FIXED, dev, METRIC, seed=0)


def with_labels(dev: DevData, y: np.ndarray) -> DevData:
    return DevData(dev.features, y, dev.folds, dev.profile, dev.task, dev.n_classes)


def tower_outputs(cv, features: pd.DataFrame) -> list[np.ndarray]:
    return [pipeline.predict_proba(features)[:, 1] for pipeline in cv.models]


def test_towers_score_like_separate_fold_fits(dev, towers):
    separate = cross_validate(
        keras_candidate("separate", PARAMS, fixed=FIXED, task="binary", n_classes=2, seed=0), dev, METRIC
    )
    assert len(towers.fold_scores) == len(separate.fold_scores) == FOLDS
    assert all(isinstance(p[-1], KerasTabularModel) for p in towers.models)
    assert np.mean(towers.fold_scores) > 0.75, towers.fold_scores  # the problem is learnable
    assert abs(np.mean(towers.fold_scores) - np.mean(separate.fold_scores)) < 0.03, (
        towers.fold_scores,
        separate.fold_scores,
    )
    # Out-of-fold predictions cover every row once, from the tower that never trained on it.
    assert towers.oof.shape == (len(dev.y), 2)
    np.testing.assert_allclose(towers.oof.sum(axis=1), 1.0, atol=1e-6)
    for fold, pipeline in zip(dev.folds, towers.models, strict=True):
        np.testing.assert_allclose(
            towers.oof[fold.valid], pipeline.predict_proba(dev.features.iloc[fold.valid]), atol=1e-6
        )


def test_each_tower_preprocessor_is_fitted_on_its_fold_training_rows(dev, towers):
    everything = build_preprocessor(dev.profile, "dense").fit(dev.features, dev.y)
    for fold, pipeline in zip(dev.folds, towers.models, strict=True):
        fitted = pipeline[0]
        reference = build_preprocessor(dev.profile, "dense").fit(
            dev.features.iloc[fold.train], dev.y[fold.train]
        )
        numbers = fitted.named_transformers_["numeric"].named_steps
        expected = reference.named_transformers_["numeric"].named_steps
        imputer, scaler = numbers["simpleimputer"], numbers["standardscaler"]
        np.testing.assert_array_equal(imputer.statistics_, expected["simpleimputer"].statistics_)  # medians
        np.testing.assert_array_equal(scaler.mean_, expected["standardscaler"].mean_)
        np.testing.assert_array_equal(scaler.scale_, expected["standardscaler"].scale_)
        categories = fitted.named_transformers_["categorical"][-1]
        expected_categories = reference.named_transformers_["categorical"][-1]
        for got, want in zip(categories.categories_, expected_categories.categories_, strict=True):
            assert list(got) == list(want)
        assert fitted.n_features_in_ == reference.n_features_in_
        assert np.all(np.atleast_1d(scaler.n_samples_seen_) == len(fold.train))
        transformed = fitted.transform(dev.features)
        np.testing.assert_allclose(transformed, reference.transform(dev.features))
        assert pipeline[-1].n_features_in_ == transformed.shape[1]
        # The check has power: statistics over all rows (held-out ones included) are different.
        everywhere = everything.named_transformers_["numeric"].named_steps["standardscaler"]
        assert not np.allclose(scaler.mean_, everywhere.mean_)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_tower_ignores_the_labels_of_its_held_out_rows(dev, batch_norm):
    params = {**PARAMS, "batch_norm": batch_norm, "l2": 1e-4}
    flipped = dev.y.copy()
    held_out = dev.folds[0].valid
    flipped[held_out] = 1 - flipped[held_out]
    first = cross_validate_towers(params, FIXED, dev, METRIC, seed=0)
    again = cross_validate_towers(params, FIXED, with_labels(dev, flipped), METRIC, seed=0)
    before, after = tower_outputs(first, dev.features), tower_outputs(again, dev.features)
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)  # tower 0 never saw those labels
    assert np.abs(after[1] - before[1]).max() > 1e-3  # tower 1 trains on them, so it moves


def test_towers_cut_by_the_time_limit_keep_their_best_whole_epochs(dev, monkeypatch):
    clock = {"now": 0.0, "reads_left": None}

    def monotonic() -> float:
        if clock["reads_left"] is not None:
            clock["reads_left"] -= 1
            if clock["reads_left"] < 0:
                clock["now"] = 101.0
        return clock["now"]

    monkeypatch.setattr(keras_model, "time", SimpleNamespace(monotonic=monotonic))

    def after_epoch(epoch: int, _loss: float) -> None:
        if epoch == 1:
            # The limit passes during the third epoch: after the clock reads of the second
            # epoch's end check (2) and of the third epoch's start (1).
            clock["reads_left"] = 3

    result = cross_validate_towers(
        PARAMS, FIXED, dev, METRIC, seed=0, deadline=100.0, after_epoch=after_epoch
    )
    assert [d["stopped_at_deadline"] for d in result.fold_details] == [True] * FOLDS
    assert [d["epochs"] for d in result.fold_details] == [3] * FOLDS  # two whole, one cut at its first step
    assert len(result.fold_scores) == FOLDS and np.isfinite(result.oof).all()
    assert all(m[-1].stopped_at_deadline_ for m in result.models)
    clock.update(now=0.0, reads_left=None)
    with pytest.raises(DeadlineReached, match="first epoch"):
        cross_validate_towers(PARAMS, FIXED, dev, METRIC, seed=0, deadline=-1.0)


def test_towers_refuse_a_shared_reduce_on_plateau_schedule(dev):
    # One plateau schedule over all towers would let fold 0's held-out labels (which the other
    # towers train and validate on) steer tower 0's learning rate.
    params = {**PARAMS, "lr_schedule": "reduce_on_plateau"}
    with pytest.raises(ValueError, match="held-out labels"):
        cross_validate_towers(params, FIXED, dev, METRIC, seed=0)


@pytest.mark.slow  # about 20 s: two runs of k separate fits
def test_reduce_on_plateau_trials_ignore_the_labels_of_held_out_rows(dev, tmp_path):
    import optuna

    from autodl.spaces import load_space
    from autodl.tuning.engine import SpaceTrials

    space_file = tmp_path / "plateau.yaml"
    space_file.write_text(
        "params:\n"
        "  n_layers: {type: categorical, choices: [1]}\n"
        "  units: {type: categorical, choices: [16], per_layer: true}\n"
        "  learning_rate: {type: categorical, choices: [0.01]}\n"
        "  lr_schedule: {type: categorical, choices: [reduce_on_plateau]}\n"
        f"fixed: {{max_epochs: {FIXED['max_epochs']}, patience: 4}}\n"
    )
    trials = SpaceTrials(load_space(space_file))
    point = {"n_layers": 1, "units_0": 16, "learning_rate": 0.01, "lr_schedule": "reduce_on_plateau"}
    flipped = dev.y.copy()
    flipped[dev.folds[0].valid] = 1 - flipped[dev.folds[0].valid]

    def run(data):
        trial = optuna.trial.FixedTrial(point)
        return trials.evaluate(trial, data, METRIC, seed=0, deadline=None, report=lambda *args: None)

    before, after = run(dev), run(with_labels(dev, flipped))
    np.testing.assert_allclose(
        tower_outputs(after, dev.features)[0], tower_outputs(before, dev.features)[0], atol=1e-6
    )


@pytest.mark.parametrize(("task", "n_classes"), [("binary", 2), ("multiclass", 3), ("regression", 0)])
def test_each_fold_network_is_exactly_its_tower_of_the_stacked_model(task, n_classes):

    from autodl.candidates.keras_towers import CompactInputs, _Stacked, _tower_orders

    rng = np.random.default_rng(0)
    # Fold preprocessors emit different widths: numbers, a one-hot block of two categorical
    # columns (some rows with an unknown category: no one), then more numbers (dates).
    layouts, inputs = [], []
    for numbers, levels, dates in [(3, (3, 2), 2), (4, (4, 3), 2), (3, (2, 2), 1)]:
        blocks = [rng.normal(size=(64, numbers))]
        for n in levels:
            blocks.append(np.eye(n + 1)[rng.integers(0, n + 1, size=64)][:, :n])  # row n: unknown
        blocks.append(rng.normal(size=(64, dates)))
        inputs.append(np.hstack(blocks).astype(np.float32))
        hot = slice(numbers, numbers + sum(levels))
        other = np.r_[0:numbers, hot.stop : inputs[-1].shape[1]]
        layouts.append((other, hot))
    compact = CompactInputs.allocate(64, layouts, n_positions=2)
    for i, x_i in enumerate(inputs):
        compact.fill(i, 0, x_i[:40])  # in two chunks, as fold_inputs does
        compact.fill(i, 40, x_i[40:])
        np.testing.assert_array_equal(compact.dense(i), x_i)
    params = {"n_layers": 2, "units": 16, "batch_norm": True, "dropout": 0.2, "l1": 1e-5, "l2": 1e-4}
    towers = _Stacked(params, compact, task, n_classes)
    y = rng.integers(0, max(n_classes, 2), size=64) if task != "regression" else rng.normal(size=64)
    targets = [y.astype(np.float32 if task == "regression" else np.int64)] * 3
    train_rows = [np.flatnonzero(rng.random(64) < 0.8) for _ in inputs]
    towers.model.compile(
        optimizer="adam",
        loss=towers.loss(
            {"binary": "binary_crossentropy", "regression": "mse"}.get(
                task, "sparse_categorical_crossentropy"
            )
        ),
    )
    x, fit_y, w = towers.training_arrays(targets, *_tower_orders(train_rows, passes=2, seed=0))
    towers.model.fit(x, fit_y, sample_weight=w, epochs=3, batch_size=16, verbose=0)  # BN statistics move
    every_row = np.repeat(np.arange(64)[:, None], 3, axis=1)  # each tower on all 64 rows
    stacked = towers.predict(every_row)
    for i, x_i in enumerate(inputs):
        alone = towers.recipe(i, name=f"fold{i}").build(params, task, n_classes).predict(x_i, verbose=0)
        np.testing.assert_allclose(alone, stacked[i], rtol=1e-4, atol=1e-5)
    # snapshot/restore per tower round-trips
    saved = towers.weights([0, 1, 2])
    towers.model.fit(x, fit_y, sample_weight=w, epochs=1, batch_size=16, verbose=0)
    towers.set_weights(saved)
    np.testing.assert_allclose(towers.predict(every_row)[1], stacked[1], rtol=1e-5, atol=1e-6)


def test_embedding_towers_train_one_network_per_fold(dev):
    space = load_space("mlp_embeddings")
    params = {**defaults_point(space), "lr_schedule": "constant"}
    cv = cross_validate_towers(params, FIXED, dev, METRIC, seed=0, builder="mlp_embeddings")
    assert len(cv.models) == FOLDS and np.mean(cv.fold_scores) > 0.75, cv.fold_scores
    for fold, pipeline in zip(dev.folds, cv.models, strict=True):
        assert any(
            layer.name.startswith("fold") and "embedding" in layer.name
            for layer in pipeline[-1].model_.layers
        )
        np.testing.assert_allclose(
            cv.oof[fold.valid], pipeline.predict_proba(dev.features.iloc[fold.valid]), atol=1e-6
        )


def test_each_tower_walks_through_its_own_training_rows_only():
    from autodl.candidates.keras_towers import _tower_orders

    rows = [np.arange(0, 50), np.arange(30, 77), np.arange(10, 60, 2)]
    order, mask = _tower_orders(rows, passes=2, seed=0)
    assert order.shape == mask.shape == (100, 3)
    for i, own in enumerate(rows):
        assert set(order[:, i]) <= set(own)  # never another fold's row, even as padding
        counted = np.bincount(order[mask[:, i] == 1, i], minlength=77)
        assert np.all(counted[own] == 2) and counted.sum() == 2 * len(own)  # each row once per pass


def test_fold_inputs_hold_each_fold_preprocessors_output_compactly():
    from autodl.candidates.keras_towers import fold_inputs

    rng = np.random.default_rng(3)
    frame = table(400)
    # many levels, some rare (grouped as infrequent) and some seen in one fold only (unknown)
    frame["city"] = rng.choice([f"c{i}" for i in range(60)], size=400, p=np.r_[[0.05] * 10, [0.5 / 50] * 50])
    frame["when"] = pd.date_range("2020-01-01", periods=400, freq="37h").astype(str)
    dataset = build_dataset(frame, target="target", folds=3, test_size=0.0)
    folds = make_folds(dataset.y, folds=3, repeats=1, stratify=True, seed=0)
    preprocessors = [
        build_preprocessor(dataset.profile, "dense").fit(dataset.features.iloc[f.train], dataset.y[f.train])
        for f in folds
    ]
    compact = fold_inputs(preprocessors, dataset.features, chunk_rows=128)
    assert compact.positions.shape[2] == 2  # one position per categorical column (group, city)
    for i, pre in enumerate(preprocessors):
        np.testing.assert_array_equal(compact.dense(i), pre.transform(dataset.features).astype(np.float32))
    dense_bytes = sum(pre.transform(dataset.features).astype(np.float32).nbytes for pre in preprocessors)
    assert compact.values.nbytes + compact.positions.nbytes < dense_bytes / 2


def test_trials_on_the_same_data_share_one_fold_preprocessing(dev):
    from autodl.candidates.keras_towers import release_fold_preprocessing

    fixed = {**FIXED, "max_epochs": 2}
    first = cross_validate_towers(PARAMS, fixed, dev, METRIC, seed=0)
    second = cross_validate_towers({**PARAMS, "units_0": 8}, fixed, dev, METRIC, seed=1)
    assert all(a[0] is b[0] for a, b in zip(first.models, second.models, strict=True))
    release_fold_preprocessing()
    third = cross_validate_towers(PARAMS, fixed, dev, METRIC, seed=0)
    assert third.models[0][0] is not first.models[0][0]
    np.testing.assert_allclose(third.oof, first.oof, atol=1e-6)  # refitted, the same preprocessing


def test_each_numeric_scaling_gets_its_own_fold_preprocessing(dev):
    from autodl.candidates.keras_towers import release_fold_preprocessing

    fixed = {**FIXED, "max_epochs": 2}
    release_fold_preprocessing()
    standard = cross_validate_towers(PARAMS, fixed, dev, METRIC, seed=0)
    quantile = cross_validate_towers({**PARAMS, "numeric_scaling": "quantile"}, fixed, dev, METRIC, seed=0)
    again = cross_validate_towers(PARAMS, fixed, dev, METRIC, seed=0)
    scaler = quantile.models[0][0].named_transformers_["numeric"][-2]
    assert type(scaler).__name__ == "NormalQuantiles"
    assert type(standard.models[0][0].named_transformers_["numeric"][-2]).__name__ == "StandardScaler"
    assert again.models[0][0] is standard.models[0][0]  # both stay cached on small data
    release_fold_preprocessing()


def test_a_large_fold_preprocessing_is_freed_before_the_next_is_computed(dev, monkeypatch):
    # On a million rows one fold preprocessing is a gigabyte: two must never be held at once.
    from autodl.candidates import keras_towers

    keras_towers.release_fold_preprocessing()
    standard = keras_towers._fold_preprocessing(dev, "dense", "standard")
    monkeypatch.setattr(keras_towers, "CACHE_BYTES", int(standard.nbytes * 1.5))
    held_while_computing = []
    real_build = keras_towers.build_preprocessor

    def build(*args, **kwargs):
        held_while_computing.append(sum(entry.nbytes for entry in keras_towers._CACHED))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(keras_towers, "build_preprocessor", build)
    quantile = keras_towers._fold_preprocessing(dev, "dense", "quantile")
    assert held_while_computing and max(held_while_computing) == 0
    assert keras_towers._CACHED == [quantile]
    keras_towers.release_fold_preprocessing()


def test_prediction_chunks_are_padded_to_few_shapes_and_trimmed_back():
    """The compiled predict function of a trial is traced per input shape: chunks are padded to
    powers of two (at most EVAL_CHUNK rows), and what comes back is exactly the rows asked for."""
    from autodl.candidates.keras_towers import EVAL_CHUNK, _chunks

    rows = np.stack([np.arange(EVAL_CHUNK + 900), np.arange(EVAL_CHUNK + 900)[::-1]], axis=1)
    chunks = list(_chunks(rows))
    assert [(len(chunk), n) for chunk, n in chunks] == [(EVAL_CHUNK, EVAL_CHUNK), (1024, 900)]
    np.testing.assert_array_equal(np.concatenate([chunk[:n] for chunk, n in chunks]), rows)
    assert {len(chunk) for chunk, _ in _chunks(rows[:600])} == {
        len(chunk) for chunk, _ in _chunks(rows[:1000])
    }
