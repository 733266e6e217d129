"""k-fold CV of one network configuration as ONE Keras model with k independent towers.

Training is bound by per-step overhead on CPUs, so k separate fits cost about k times one fit,
plus k tracings. Here tower i sees only fold i's training rows (per-output sample weights of 0
elsewhere), is early-stopped on its own inner validation rows, and is scored on fold i's held-out
rows, as a separate fit would be; the model is traced and compiled once per trial. Nothing a
tower learns depends on another fold's labels: optimizer state is per variable, schedules are
data-independent (a shared reduce-on-plateau schedule would not be, so it is refused here), and
the all-towers-done stop comes after each tower's own best epoch. One difference remains: with
batch normalization, a tower's batch statistics include the feature values (never the labels)
of rows it does not train on. Each tower is then a standalone network, paired with its fold's
preprocessing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from autodl.candidates.builders import build_mlp, build_optimizer, loss_for
from autodl.candidates.keras_model import KerasTabularModel, TrainingDiverged, _deadline_callback, inner_split
from autodl.metrics import Metric
from autodl.preprocess import build_preprocessor, category_cardinalities
from autodl.runtime import import_keras
from autodl.tuning.cv import CVResult, DeadlineReached, DevData, FoldCollector

EVAL_CHUNK = 16384
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
    preprocessors, inputs, targets, weights, valid_rows, scales, cardinalities = [], [], [], [], [], [], []
    for fold in folds:
        pre = build_preprocessor(data.profile, style).fit(data.features.iloc[fold.train], data.y[fold.train])
        preprocessors.append(pre)
        cardinalities.append(tuple(category_cardinalities(pre)) if style == "embedding" else ())
        inputs.append(np.asarray(pre.transform(data.features), dtype=np.float32))
        train_pos, valid_pos = inner_split(data.y[fold.train], task=task, fraction=fraction, seed=seed)
        weight = np.zeros(len(data.y), dtype=np.float32)
        weight[fold.train[train_pos]] = 1.0
        weights.append(weight)
        valid_rows.append(fold.train[valid_pos])
        if task == "regression":
            train_y = data.y[fold.train[train_pos]]
            scale = (float(np.mean(train_y)), float(np.std(train_y) or 1.0))
            scales.append(scale)
            targets.append(((data.y - scale[0]) / scale[1]).astype(np.float32))
        else:
            scales.append(None)
            targets.append(data.y.astype(np.int64))

    towers = [
        build_mlp(params, x.shape[1], task, n_classes, prefix=f"fold{i}_", cardinalities=cardinalities[i])
        for i, x in enumerate(inputs)
    ]
    combined = keras.Model([t.inputs[0] for t in towers], [t.outputs[0] for t in towers], name="fold_towers")
    share = float(np.mean([w.mean() for w in weights]))  # rows each tower trains on, per batch row
    batch_size = int(min(len(data.y), max(8, round(int(params.get("batch_size", 64)) / max(share, 1e-3)))))
    steps = math.ceil(len(data.y) / batch_size)
    # On small data an epoch is a handful of steps and Keras' fixed per-epoch cost dominates:
    # one "epoch" then makes `passes` passes over the rows, and epoch budgets shrink to match.
    passes = max(1, math.ceil(MIN_STEPS_PER_EPOCH / steps))
    max_epochs, patience = math.ceil(max_epochs / passes), max(3, math.ceil(patience / passes))
    steps *= passes
    combined.compile(
        optimizer=build_optimizer(params, steps, max_epochs),
        loss=[loss_for(task)] * len(towers),
        steps_per_execution=max(1, min(32, steps)),
    )
    union = np.unique(np.concatenate(valid_rows))
    position = {row: i for i, row in enumerate(union)}
    stopper = _deadline_callback(deadline)
    monitor = _tower_monitor(
        keras, towers, inputs, targets, valid_rows, union, position, task, patience, after_epoch
    )
    if params.get("lr_schedule") == "reduce_on_plateau":
        raise ValueError(
            "reduce_on_plateau needs per-fold fits: one plateau schedule over all towers would let "
            "a fold's held-out labels steer its tower's learning rate"
        )
    callbacks = [stopper, monitor]
    fit_x = [np.tile(x, (passes, 1)) for x in inputs]
    fit_y = [np.tile(t, passes) for t in targets]
    fit_weights = [np.tile(w, passes) for w in weights]
    fit_started = time.perf_counter()
    history = combined.fit(
        fit_x,
        fit_y,
        sample_weight=fit_weights,
        epochs=max_epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )
    train_seconds = time.perf_counter() - fit_started  # inside combined.fit: the training proper
    del fit_x, fit_y, fit_weights
    losses = history.history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrainingDiverged(f"training loss became {losses[-1] if losses else 'undefined'}")
    if stopper.hit:
        raise DeadlineReached(f"time limit reached after epoch {len(losses)} of the fold towers")
    monitor.restore_best()

    collected = FoldCollector(data, metric, started)
    for i, fold in enumerate(folds):
        tower = keras.Model(towers[i].inputs[0], towers[i].outputs[0], name=f"mlp_fold{i}")
        tower_history = {
            "loss": [float(v) for v in history.history.get(f"{combined.output_names[i]}_loss", losses)],
            "val_loss": monitor.val_history[i],
        }
        estimator = KerasTabularModel.from_trained(
            tower,
            history=tower_history,
            stopped_at_deadline=False,
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
            {
                "history": tower_history,
                "best_epoch": monitor.best_epoch[i] + 1,
                "epochs": len(losses),
                "n_parameters": estimator.n_parameters_,
                "train_seconds": train_seconds,
            },
        )
    return collected.result()


def _tower_monitor(keras, *args):
    """A Keras callback: per-tower early stopping on each tower's inner validation rows."""

    class TowerMonitor(_TowerState, keras.callbacks.Callback):
        pass

    monitor = TowerMonitor(keras, *args)
    keras.callbacks.Callback.__init__(monitor)
    return monitor


class _TowerState:
    """Tracks each tower's best inner-validation loss and weights; stops when every tower is done."""

    def __init__(
        self, keras, towers, inputs, targets, valid_rows, union, position, task, patience, after_epoch
    ):
        self.keras, self.towers, self.task, self.patience, self.after_epoch = (
            keras,
            towers,
            task,
            patience,
            after_epoch,
        )
        self.union_inputs = [x[union] for x in inputs]
        self.local = [np.asarray([position[r] for r in rows]) for rows in valid_rows]
        self.local_targets = [t[rows] for t, rows in zip(targets, valid_rows, strict=True)]
        k = len(towers)
        self.best = [math.inf] * k
        self.best_epoch = [0] * k
        self.best_weights = [t.get_weights() for t in towers]
        self.wait = [0] * k
        self.val_history: list[list[float]] = [[] for _ in range(k)]

    def on_epoch_end(self, epoch, logs=None):
        outputs = self._predict_union()
        for i in range(len(self.towers)):
            loss = _pointwise_loss(self.task, self.local_targets[i], outputs[i][self.local[i]])
            self.val_history[i].append(loss)
            if self.wait[i] >= self.patience:
                continue  # this tower has stopped; its best weights are kept
            if loss < self.best[i] - 1e-7:
                self.best[i], self.best_epoch[i], self.wait[i] = loss, epoch, 0
                self.best_weights[i] = self.towers[i].get_weights()
            else:
                self.wait[i] += 1
        if all(w >= self.patience for w in self.wait):
            self.model.stop_training = True
        if self.after_epoch is not None:
            self.after_epoch(epoch, float(np.mean(self.best)))

    def _predict_union(self) -> list[np.ndarray]:
        pieces = []
        n = len(self.union_inputs[0])
        for start in range(0, n, EVAL_CHUNK):
            out = self.model([x[start : start + EVAL_CHUNK] for x in self.union_inputs], training=False)
            pieces.append([self.keras.ops.convert_to_numpy(o) for o in out])
        return [np.concatenate([p[i] for p in pieces], axis=0) for i in range(len(self.towers))]

    def restore_best(self) -> None:
        for tower, weights in zip(self.towers, self.best_weights, strict=True):
            tower.set_weights(weights)
