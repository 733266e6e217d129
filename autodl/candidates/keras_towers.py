"""k-fold CV of one network configuration as ONE Keras model with k independent towers.

Training is bound by per-step overhead on CPUs, so k separate fits cost about k times one fit,
plus k tracings. Here the k fold networks are one stacked network (each layer holds one kernel
per tower), traced and compiled once per trial. Tower i walks through fold i's training rows
only (each position of a batch holds a different row for each tower), is early-stopped on its
own inner validation rows, and is scored on fold i's held-out rows, as a separate fit would be.
Nothing a tower learns depends on another fold's rows: weights, optimizer state and batch
statistics are per tower, schedules are data-independent (a shared reduce-on-plateau schedule
would not be, so it is refused here), and the all-towers-done stop comes after each tower's own
best epoch. The joint model then scores each fold's held-out rows with that fold's tower, and
each tower is kept as its weights (a NetworkRecipe, built as a standalone network on first
use), paired with its fold's preprocessing. Embedding spaces (per-fold vocabularies) put k
separate networks side by side in one model instead, with the same row walks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.pipeline import Pipeline

from autodl.candidates.builders import build_mlp, build_optimizer, build_stacked_mlp, loss_for
from autodl.candidates.keras_model import (
    KerasTabularModel,
    NetworkRecipe,
    TrainingDiverged,
    _deadline_callback,
    inner_split,
)
from autodl.metrics import Metric
from autodl.preprocess import build_preprocessor, category_cardinalities, fit_preprocessor
from autodl.runtime import import_keras
from autodl.tuning.cv import CVResult, DeadlineReached, DevData, FoldCollector

EVAL_CHUNK = 4096  # rows per prediction call: bounds the activations held at once
TRANSFORM_CHUNK = 65536
MIN_STEPS_PER_EPOCH = 16


def _pointwise_loss(task: str, y: np.ndarray, out: np.ndarray) -> float:
    """The training loss of one tower on its inner validation rows (numpy, no graph tracing)."""
    if task == "regression":
        return float(np.mean((out.reshape(-1) - y) ** 2))
    eps = 1e-7
    if task == "binary":
        p = np.clip(out.reshape(-1), eps, 1 - eps)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    p = np.clip(out[np.arange(len(y)), y.astype(int)], eps, 1.0)
    return float(-np.mean(np.log(p)))


def cross_validate_towers(
    params: dict[str, Any],
    fixed: dict[str, Any],
    data: DevData,
    metric: Metric,
    *,
    seed: int,
    deadline: float | None = None,
    after_epoch: Callable[[int, float], None] | None = None,
    builder: str = "mlp",
) -> CVResult:
    """Cross-validate the network `params` on `data.folds` with one k-tower model.

    `after_epoch(epoch, mean_best_val_loss)` runs after each epoch and may raise to prune.
    """
    keras = import_keras()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    task, n_classes, folds = data.task, data.n_classes, data.folds
    max_epochs, patience = int(fixed["max_epochs"]), int(fixed["patience"])
    fraction = float(fixed["validation_fraction"])

    style = "embedding" if builder == "mlp_embeddings" else "dense"
    prepared = _fold_preprocessing(data, style, str(params.get("numeric_scaling", "standard")))
    preprocessors = prepared.preprocessors
    targets, train_rows, valid_rows, scales = [], [], [], []
    for fold in folds:
        train_pos, valid_pos = inner_split(
            data.y[fold.train],
            task=task,
            fraction=fraction,
            seed=seed,
            times=None if data.times is None else data.times[fold.train],
        )
        train_rows.append(fold.train[train_pos])
        valid_rows.append(fold.train[valid_pos])
        if task == "regression":
            train_y = data.y[fold.train[train_pos]]
            scale = (float(np.mean(train_y)), float(np.std(train_y) or 1.0))
            scales.append(scale)
            targets.append(((data.y - scale[0]) / scale[1]).astype(np.float32))
        else:
            scales.append(None)
            targets.append(data.y.astype(np.int64))

    if style == "embedding":  # per-fold embedding vocabularies: one network per fold, side by side
        cardinalities = [tuple(category_cardinalities(pre)) for pre in preprocessors]
        towers: _Towers = _SideBySide(keras, params, prepared.inputs, task, n_classes, cardinalities)
    else:
        towers = _Stacked(params, prepared.inputs, task, n_classes)
    longest = max(len(rows) for rows in train_rows)
    batch_size = int(min(longest, max(8, int(params.get("batch_size", 64)))))
    steps = math.ceil(longest / batch_size)
    # On small data an epoch is a handful of steps and Keras' fixed per-epoch cost dominates:
    # one "epoch" then makes `passes` passes over the rows, and epoch budgets shrink to match.
    passes = max(1, math.ceil(MIN_STEPS_PER_EPOCH / steps))
    max_epochs, patience = math.ceil(max_epochs / passes), max(3, math.ceil(patience / passes))
    steps *= passes
    if params.get("lr_schedule") == "reduce_on_plateau":
        raise ValueError(
            "reduce_on_plateau needs per-fold fits: one plateau schedule over all towers would let "
            "a fold's held-out labels steer its tower's learning rate"
        )
    towers.model.compile(
        optimizer=build_optimizer(params, steps, max_epochs),
        loss=towers.loss(loss_for(task)),
        steps_per_execution=max(1, min(32, steps)),
    )
    # one padded length for the epochs' and the held-out predictions: one trace serves both
    length = max(len(rows) for rows in [*valid_rows, *(fold.valid for fold in folds)])
    monitor = _tower_monitor(keras, towers, valid_rows, length, targets, task, patience, after_epoch)
    held_out_rows = sum(len(fold.valid) for fold in folds)
    # On a large table predicting the held-out rows takes seconds: the time limit covers it.
    stopper = _deadline_callback(
        deadline, after_training=lambda: monitor.predict_seconds_per_row * held_out_rows
    )
    callbacks = [monitor, stopper]  # the stopper then times each epoch with its predictions
    order, mask = _tower_orders(train_rows, passes, seed)
    # the arrays live on in the stream only (as tensors), not twice
    stream = _shuffled_batches(towers.training_arrays(targets, order, mask), batch_size)
    del order, mask
    fit_started = time.perf_counter()
    history = towers.model.fit(
        stream,
        epochs=max_epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,  # the stream shuffles each pass itself
    )
    train_seconds = time.perf_counter() - fit_started  # inside combined.fit: the training proper
    del stream
    losses = history.history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrainingDiverged(f"training loss became {losses[-1] if losses else 'undefined'}")
    whole_epochs = len(losses) - (1 if stopper.cut_mid_epoch else 0)  # Keras logs a cut epoch too
    if stopper.hit and whole_epochs < 1:
        raise DeadlineReached("time limit reached during the first epoch of the fold towers")
    # Cut short by the time limit after whole epochs, each tower still has the weights of its
    # best epoch on its inner validation rows: k honest fold models, scored like any other (on
    # a large table the one trial the budget allows would otherwise leave no network at all).
    monitor.restore_best()

    predict_started = time.perf_counter()
    held_out = _own_rows_outputs(towers, [fold.valid for fold in folds], length)
    # what the fold models' own predictions on these rows would cost: their preprocessing too
    predict_seconds = (
        time.perf_counter() - predict_started + prepared.transform_seconds_per_row * held_out_rows
    )
    collected = FoldCollector(data, metric, started)
    for i, fold in enumerate(folds):
        tower = towers.recipe(i, name=f"mlp_fold{i}")
        tower_history = {"loss": towers.training_loss(history.history, i), "val_loss": monitor.val_history[i]}
        estimator = KerasTabularModel.from_trained(
            tower,
            history=tower_history,
            stopped_at_deadline=stopper.hit,
            y_scale=scales[i],
            task=task,
            n_classes=n_classes,
            params=params,
            max_epochs=max_epochs,
            patience=patience,
            validation_fraction=fraction,
            seed=seed,
        )
        pipeline = Pipeline([("preprocess", preprocessors[i]), ("model", estimator)])
        collected.add(
            fold,
            pipeline,
            prediction=estimator.scores_from_output(held_out[i]),
            predict_seconds=predict_seconds / len(folds),
            detail={
                "history": tower_history,
                "best_epoch": monitor.best_epoch[i] + 1,
                "epochs": len(losses),
                "n_parameters": estimator.n_parameters_,
                "train_seconds": train_seconds / len(folds),  # this tower's share of the joint fit
                "stopped_at_deadline": stopper.hit,
            },
        )
    return collected.result()


def _shuffled_batches(arrays, batch_size: int):
    """An endless tf.data stream of batches of `arrays` (x, y, weights; arrays or lists of
    arrays), each pass over the rows in a fresh order (from the seeded global TF seed).

    What Keras builds from arrays (row indices shuffled per pass, batches gathered from the
    arrays held once as one dataset element, default graph rewrites off: they would serialize
    those arrays), less its per-epoch cost: Keras makes a new iterator (~16 ms) once or twice an
    epoch, a tenth of an epoch on small data; this stream is iterated once per fit
    (`steps_per_epoch` marks the epochs).
    """
    # tf.data is what Keras itself streams arrays through; TensorFlow is a dependency whatever
    # the backend, and Keras takes a tf.data stream on any backend.
    import tensorflow as tf  # noqa: TID251

    n_rows = len(tf.nest.flatten(arrays)[0])
    full = n_rows // batch_size

    def one_pass(_):
        order = tf.random.shuffle(tf.range(n_rows, dtype=tf.int64))
        batches = tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[: full * batch_size], (full, batch_size))
        )
        if n_rows % batch_size:
            batches = batches.concatenate(tf.data.Dataset.from_tensors(order[full * batch_size :]))
        return batches

    def gather(rows, data):
        return tf.nest.map_structure(lambda values: tf.gather(values, rows), data)

    rows = tf.data.Dataset.range(1).repeat().flat_map(one_pass)
    stream = tf.data.Dataset.zip((rows, tf.data.Dataset.from_tensors(_as_tuples(arrays)).repeat()))
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    # One gather at a time, in the prefetch thread, and no autotuning: with the one inter-op
    # thread a search runs TensorFlow with, an autotuned parallel map at times held `fit`
    # ~18 s past its last epoch (bikeshare at 60 s: 3 of 9 benchmark runs).
    options.autotune.enabled = False
    return stream.map(gather).with_options(options).prefetch(2)


def _as_tuples(structure):
    """Lists to tuples, recursively: tf.data would stack a list into one tensor."""
    if isinstance(structure, (list, tuple)):
        return tuple(_as_tuples(item) for item in structure)
    return structure


def _own_rows_outputs(towers: _Towers, rows: list[np.ndarray], length: int = 0) -> list[np.ndarray]:
    """Tower i's raw output on rows[i], for every tower in one pass of the joint model: each
    position of a chunk holds a different row for each tower (as in training), so no tower
    computes on another tower's rows. Padded (by repeats) to at least `length` positions."""
    longest = max(length, *(len(own) for own in rows))
    order = np.stack([np.resize(own, longest) for own in rows], axis=1)  # padded by repeats
    outputs = towers.predict(order)
    return [outputs[i][: len(own)] for i, own in enumerate(rows)]


@dataclass
class _FoldPreprocessing:
    """Each fold's fitted preprocessor and its output on every row, for one DevData."""

    data: DevData
    style: str
    numeric_scaling: str
    preprocessors: list
    inputs: Any  # CompactInputs (dense style) or one float32 matrix per fold (embedding style)
    transform_seconds_per_row: float  # one fold preprocessor on one row, as measured here

    @property
    def nbytes(self) -> int:
        arrays = self.inputs if isinstance(self.inputs, list) else [self.inputs.values, self.inputs.positions]
        return sum(a.nbytes for a in arrays)


_CACHED: list[_FoldPreprocessing] = []
# Beyond this, only the latest preprocessing stays cached: on a million rows one is a gigabyte.
CACHE_BYTES = 512 * 2**20


def _fold_preprocessing(data: DevData, style: str, numeric_scaling: str = "standard") -> _FoldPreprocessing:
    """The fold preprocessing of `data`, computed once and reused by every trial on it.

    It depends only on the rows, the folds, the profile and the preprocessing choices, never
    on the network; on a million rows computing it takes minutes, on 5k rows about a second.
    """
    for entry in _CACHED:
        if entry.data is data and (entry.style, entry.numeric_scaling) == (style, numeric_scaling):
            return entry
    if any(entry.data is not data for entry in _CACHED):
        release_fold_preprocessing()  # another table: free the previous one first
    # The new one will be about as large as those held: make room first, so that on a large
    # table two gigabyte-sized preprocessings never coexist while the new one is computed.
    expected = max((entry.nbytes for entry in _CACHED), default=0)
    while _CACHED and sum(entry.nbytes for entry in _CACHED) + expected > CACHE_BYTES:
        _CACHED.pop(0)
    preprocessors = [
        fit_preprocessor(
            build_preprocessor(data.profile, style, numeric_scaling),
            data.features.iloc[fold.train],
            data.y[fold.train],
        )
        for fold in data.folds
    ]
    started = time.perf_counter()
    if style == "embedding":
        inputs = [np.asarray(pre.transform(data.features), dtype=np.float32) for pre in preprocessors]
    else:
        inputs = fold_inputs(preprocessors, data.features)
    per_row = (time.perf_counter() - started) / max(len(preprocessors) * len(data.y), 1)
    _CACHED.append(_FoldPreprocessing(data, style, numeric_scaling, preprocessors, inputs, per_row))
    while len(_CACHED) > 1 and sum(entry.nbytes for entry in _CACHED) > CACHE_BYTES:
        _CACHED.pop(0)
    return _CACHED[-1]


def release_fold_preprocessing() -> None:
    """Drop the cached fold preprocessing (at the end of a search: it can be gigabytes)."""
    _CACHED.clear()


def _tower_orders(train_rows: list[np.ndarray], passes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which row each tower trains on at each position: (positions, towers) indices and weights.

    Towers never share weights, so position p may hold a different row for each tower: tower i
    walks through its own training rows only (`passes` shuffled passes), and a tower with fewer
    rows than the longest is topped up with zero-weight rows. Each tower thus computes on its
    training rows alone, instead of on every row with the others masked out.
    """
    rng = np.random.default_rng(seed)
    length = passes * max(len(rows) for rows in train_rows)
    order = np.empty((length, len(train_rows)), dtype=np.int64)
    mask = np.zeros((length, len(train_rows)), dtype=np.float32)
    for i, rows in enumerate(train_rows):
        walk = np.concatenate([rng.permutation(rows) for _ in range(passes)])
        order[:, i] = np.concatenate([walk, rng.choice(rows, size=length - len(walk))])
        mask[: len(walk), i] = 1.0
    return order, mask


def _tower_monitor(keras, *args):
    """A Keras callback: per-tower early stopping on each tower's inner validation rows."""

    class TowerMonitor(_TowerState, keras.callbacks.Callback):
        pass

    monitor = TowerMonitor(*args)
    keras.callbacks.Callback.__init__(monitor)
    return monitor


class _TowerState:
    """Tracks each tower's best inner-validation loss and weights; stops when every tower is done."""

    def __init__(self, towers: _Towers, valid_rows, length, targets, task, patience, after_epoch):
        self.towers, self.task, self.patience, self.after_epoch = towers, task, patience, after_epoch
        self.valid_rows, self.length = valid_rows, length
        self.local_targets = [t[rows] for t, rows in zip(targets, valid_rows, strict=True)]
        k = towers.count
        self.best = [math.inf] * k
        self.best_epoch = [0] * k
        self.best_weights = towers.weights(list(range(k)))
        self.wait = [0] * k
        self.val_history: list[list[float]] = [[] for _ in range(k)]
        self.predict_seconds_per_row = 0.0
        self.n_valid_rows = sum(len(rows) for rows in valid_rows)

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        outputs = _own_rows_outputs(self.towers, self.valid_rows, self.length)
        seconds_per_row = (time.perf_counter() - started) / max(self.n_valid_rows, 1)
        # the least so far: the first epoch's also traces the predict function
        self.predict_seconds_per_row = min(seconds_per_row, self.predict_seconds_per_row or math.inf)
        improved = []
        for i in range(self.towers.count):
            loss = _pointwise_loss(self.task, self.local_targets[i], outputs[i])
            self.val_history[i].append(loss)
            if self.wait[i] >= self.patience:
                continue  # this tower has stopped; its best weights are kept
            if loss < self.best[i] - 1e-7:
                self.best[i], self.best_epoch[i], self.wait[i] = loss, epoch, 0
                improved.append(i)
            else:
                self.wait[i] += 1
        for i, weights in zip(improved, self.towers.weights(improved), strict=True):
            self.best_weights[i] = weights
        if all(w >= self.patience for w in self.wait):
            self.model.stop_training = True
        if self.after_epoch is not None:
            self.after_epoch(epoch, float(np.mean(self.best)))

    def restore_best(self) -> None:
        self.towers.set_weights(self.best_weights)


class _Towers(Protocol):
    """k fold networks trained as one Keras model.

    `predict` runs the compiled model (`predict_on_batch`, traced once per trial): called eagerly
    after every epoch, Keras' op-by-op dispatch cost ~45 ms a call, a sixth of a small trial.
    """

    model: Any
    count: int

    def loss(self, name: str) -> Any: ...

    def training_arrays(self, targets, order: np.ndarray, mask: np.ndarray) -> tuple[Any, Any, Any]: ...

    def predict(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each tower's output on its own rows: rows[:, i] for tower i."""
        ...

    def weights(self, towers: list[int]) -> list[list[np.ndarray]]:
        """Copies of each listed tower's weights (in `build_mlp`'s order)."""
        ...

    def set_weights(self, per_tower: list[list[np.ndarray]]) -> None: ...

    def training_loss(self, history: dict[str, list[float]], tower: int) -> list[float]: ...

    def recipe(self, tower: int, name: str) -> NetworkRecipe:
        """Tower `tower` as a standalone `build_mlp` network on its fold's preprocessed columns."""
        ...


def _chunks(rows: np.ndarray):
    """(chunk, its row count) pairs of at most EVAL_CHUNK rows, each padded (by repeating rows)
    to a power of two: the compiled predict function of a trial then sees one or two shapes
    (the epochs' inner-validation rows and the held-out rows share one) instead of a new one
    to trace for each."""
    for start in range(0, len(rows), EVAL_CHUNK):
        chunk = rows[start : start + EVAL_CHUNK]
        size = 1 << max(8, (len(chunk) - 1).bit_length())
        yield chunk[np.arange(size) % len(chunk)], len(chunk)


@dataclass
class CompactInputs:
    """Every fold's preprocessed rows for the stacked towers, without k dense copies.

    A fold's row is its other columns' values (`values`, padded to one width) and the
    positions of the ones in its one-hot block (`positions`; `one_hot_width` means none), which
    the stacked model expands itself. `layouts[i]` = (fold i's other columns, its one-hot slice)
    in the fold preprocessor's column order.
    """

    values: np.ndarray  # (rows, towers, n_values) float32
    positions: np.ndarray  # (rows, towers, n_positions) int32
    one_hot_width: int
    layouts: list[tuple[np.ndarray, slice]]

    @classmethod
    def allocate(
        cls, n_rows: int, layouts: list[tuple[np.ndarray, slice]], n_positions: int
    ) -> CompactInputs:
        width = max(block.stop - block.start for _, block in layouts)
        return cls(
            np.zeros((n_rows, len(layouts), max(len(other) for other, _ in layouts)), dtype=np.float32),
            np.full((n_rows, len(layouts), n_positions), width, dtype=np.int32),
            width,
            layouts,
        )

    def fill(self, tower: int, start: int, block: np.ndarray) -> None:
        """Store rows start.. of fold `tower`'s preprocessed matrix (its own column order)."""
        other, hot = self.layouts[tower]
        stop = start + len(block)
        self.values[start:stop, tower, : len(other)] = block[:, other]
        ones = block[:, hot]
        rows, columns = np.nonzero(ones)
        if not np.all(ones[rows, columns] == 1):
            raise ValueError("the one-hot block holds values other than 0 and 1")
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # k-th one of its row
        if len(rank) and rank.max() >= self.positions.shape[2]:
            raise ValueError("a row has more ones in its one-hot block than categorical columns")
        self.positions[start + rows, tower, rank] = columns

    @property
    def towers(self) -> int:
        return len(self.layouts)

    def width(self, tower: int) -> int:
        other, hot = self.layouts[tower]
        return len(other) + hot.stop - hot.start

    def input_rows(self, tower: int) -> np.ndarray:
        """For each of fold `tower`'s columns, its position in the stacked model's expanded input."""
        other, hot = self.layouts[tower]
        rows = np.empty(self.width(tower), dtype=np.int64)
        rows[other] = np.arange(len(other))
        rows[hot] = self.values.shape[2] + np.arange(hot.stop - hot.start)
        return rows

    def model_inputs(self, index) -> Any:
        """The stacked model's input for rows `index` (or (rows, towers) index arrays)."""
        if not self.positions.shape[2]:
            return self.values[index]
        return [self.values[index], self.positions[index]]

    def dense(self, tower: int) -> np.ndarray:
        """Fold `tower`'s preprocessed matrix as its preprocessor emitted it (float32)."""
        other, hot = self.layouts[tower]
        out = np.zeros((len(self.values), self.width(tower)), dtype=np.float32)
        out[:, other] = self.values[:, tower, : len(other)]
        rows, slots = np.nonzero(self.positions[:, tower] < self.one_hot_width)
        out[rows, hot.start + self.positions[rows, tower, slots]] = 1.0
        return out


def fold_inputs(preprocessors: list, features, chunk_rows: int = TRANSFORM_CHUNK) -> CompactInputs:
    """Every fold preprocessor's output on all rows, as CompactInputs (transformed in chunks, so
    no fold's float64 matrix is ever whole in memory)."""
    layouts, n_positions = [], 0
    for pre in preprocessors:
        width = int(sum(block.stop - block.start for block in pre.output_indices_.values()))
        hot = pre.output_indices_.get("categorical", slice(0, 0))
        other = np.concatenate([np.arange(0, hot.start), np.arange(hot.stop, width)]).astype(np.int64)
        layouts.append((other, slice(hot.start, hot.stop)))
        columns = [cols for name, _, cols in pre.transformers_ if name == "categorical"]
        n_positions = max(n_positions, len(columns[0]) if columns and hot.stop > hot.start else 0)
    inputs = CompactInputs.allocate(len(features), layouts, n_positions)
    for start in range(0, len(features), chunk_rows):
        rows = features.iloc[start : start + chunk_rows]
        for tower, pre in enumerate(preprocessors):
            inputs.fill(tower, start, np.asarray(pre.transform(rows)))
    return inputs


class _Stacked:
    """The k networks as one stacked network (`build_stacked_mlp`) on CompactInputs."""

    def __init__(self, params, inputs: CompactInputs, task: str, n_classes: int) -> None:
        self.task = task
        self.inputs, self.count = inputs, inputs.towers
        self.model = build_stacked_mlp(
            params,
            self.count,
            inputs.values.shape[2],
            task,
            n_classes,
            one_hot=(inputs.positions.shape[2], inputs.one_hot_width),
        )

    def loss(self, name: str) -> str:
        return name

    def training_arrays(self, targets, order: np.ndarray, mask: np.ndarray):
        towers = np.arange(self.count)
        y = np.stack(targets, axis=1)[order, towers]
        y = y[..., None] if self.task in ("binary", "regression") else y
        # Keras averages the loss over all (row, tower) pairs; x k gives the sum of the towers'
        # mean losses, as k separate outputs would.
        return self.inputs.model_inputs((order, towers)), y, mask * self.count

    def predict(self, rows: np.ndarray) -> list[np.ndarray]:
        pieces, towers = [], np.arange(self.count)
        for chunk, n in _chunks(rows):
            pieces.append(self.model.predict_on_batch(self.inputs.model_inputs((chunk, towers)))[:n])
        out = np.concatenate(pieces, axis=0)
        return [out[:, i] for i in range(self.count)]

    def _variables(self) -> list[np.ndarray]:
        # views with the tower axis first (batch normalization's weights are flat: towers x units)
        return [v.reshape(self.count, -1) if v.ndim == 1 else v for v in self.model.get_weights()]

    def weights(self, towers: list[int]) -> list[list[np.ndarray]]:
        variables = self._variables() if towers else []  # the whole model's weights: read once
        return [[v[tower].copy() for v in variables] for tower in towers]

    def set_weights(self, per_tower: list[list[np.ndarray]]) -> None:
        shapes = [v.shape for v in self.model.get_weights()]
        values = self._variables()
        for tower, saved in enumerate(per_tower):
            for value, piece in zip(values, saved, strict=True):
                value[tower] = piece
        self.model.set_weights([v.reshape(shape) for v, shape in zip(values, shapes, strict=True)])

    def training_loss(self, history: dict[str, list[float]], tower: int) -> list[float]:
        # one loss for the stacked model (the towers' sum): the towers' mean is what is known
        return [float(v) / self.count for v in history.get("loss", [])]

    def recipe(self, tower: int, name: str) -> NetworkRecipe:
        # build_mlp's weights come in the stacked model's order; the first kernel's rows are the
        # expanded stacked input's, so they are picked (and ordered) as the fold's columns
        weights = self.weights([tower])[0]
        weights[0] = weights[0][self.inputs.input_rows(tower)]
        return NetworkRecipe(self.inputs.width(tower), weights, prefix=f"fold{tower}_", name=name)


class _SideBySide:
    """The k networks side by side in one multi-input, multi-output model (embedding inputs)."""

    def __init__(self, keras, params, inputs, task: str, n_classes: int, cardinalities) -> None:
        self.inputs, self.count = inputs, len(inputs)
        self.cardinalities = cardinalities
        self.networks = [
            build_mlp(params, x.shape[1], task, n_classes, prefix=f"fold{i}_", cardinalities=cardinalities[i])
            for i, x in enumerate(inputs)
        ]
        self.model = keras.Model(
            [t.inputs[0] for t in self.networks], [t.outputs[0] for t in self.networks], name="fold_towers"
        )

    def loss(self, name: str) -> list[str]:
        return [name] * self.count

    def training_arrays(self, targets, order: np.ndarray, mask: np.ndarray):
        return (
            [x[order[:, i]] for i, x in enumerate(self.inputs)],
            [t[order[:, i]] for i, t in enumerate(targets)],
            [mask[:, i] for i in range(self.count)],
        )

    def predict(self, rows: np.ndarray) -> list[np.ndarray]:
        pieces = []
        for chunk, n in _chunks(rows):
            out = self.model.predict_on_batch([x[chunk[:, i]] for i, x in enumerate(self.inputs)])
            pieces.append([o[:n] for o in out])
        return [np.concatenate([p[i] for p in pieces], axis=0) for i in range(self.count)]

    def weights(self, towers: list[int]) -> list[list[np.ndarray]]:
        return [self.networks[tower].get_weights() for tower in towers]

    def set_weights(self, per_tower: list[list[np.ndarray]]) -> None:
        for network, weights in zip(self.networks, per_tower, strict=True):
            network.set_weights(weights)

    def training_loss(self, history: dict[str, list[float]], tower: int) -> list[float]:
        own = history.get(f"{self.model.output_names[tower]}_loss", history.get("loss", []))
        return [float(v) for v in own]

    def recipe(self, tower: int, name: str) -> NetworkRecipe:
        return NetworkRecipe(
            self.inputs[tower].shape[1],
            self.networks[tower].get_weights(),
            prefix=f"fold{tower}_",
            name=name,
            cardinalities=self.cardinalities[tower],
        )
