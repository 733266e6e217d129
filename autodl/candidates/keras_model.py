"""KerasTabularModel: a scikit-learn style estimator that trains a Keras network with early stopping."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split

from autodl.candidates.builders import build_mlp, build_optimizer, loss_for
from autodl.runtime import check_interrupt, import_keras

PREDICT_CHUNK = 16384
MIN_VALIDATION_ROWS = 16


def inner_split(
    y: np.ndarray, *, task: str, fraction: float, seed: int, times: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the rows to train on and of the inner validation rows that steer early stopping.

    Stratified for classification; with `times` (time-ordered folds), the latest rows, so that
    the epoch is chosen for predicting later rows, as the fold is scored. With too few rows to
    spare, both are all rows (the training loss then steers early stopping).
    """
    rows = np.arange(len(y))
    n_valid = max(MIN_VALIDATION_ROWS, int(round(fraction * len(y))))
    if n_valid >= len(y) // 2:
        return rows, rows
    if times is not None:
        order = np.argsort(times, kind="stable")
        return np.sort(order[:-n_valid]), np.sort(order[-n_valid:])
    stratify = y if task != "regression" and np.bincount(y.astype(np.int64)).min(initial=0) >= 2 else None
    try:
        train, valid = train_test_split(rows, test_size=n_valid, random_state=seed, stratify=stratify)
    except ValueError:  # a class too small to stratify
        train, valid = train_test_split(rows, test_size=n_valid, random_state=seed)
    return np.sort(train), np.sort(valid)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def _deadline_callback(deadline: float | None, after_training: Callable[[], float] | None = None):
    """`after_training()`: the seconds the caller still needs once training stops (predicting
    the held-out rows), kept clear of the deadline too."""
    keras = import_keras()

    class StopAtDeadline(keras.callbacks.Callback):
        """Stop before an epoch would overrun the deadline (checked per epoch and per step chunk),
        and as soon as the loss stops being finite."""

        def __init__(self) -> None:
            super().__init__()
            self.hit = False
            self.cut_mid_epoch = False
            self._epoch_started = time.monotonic()
            self._epoch_seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_started = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            check_interrupt()  # one that landed in garbage collection and was swallowed
            if logs and not math.isfinite(float(logs.get("loss", 0.0))):
                self.model.stop_training = (
                    True  # diverged: the caller reports it (quietly, unlike TerminateOnNaN)
                )
            elif deadline is not None and time.monotonic() >= deadline:
                self.hit = self.cut_mid_epoch = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self._epoch_seconds = time.monotonic() - self._epoch_started
            tail = after_training() if after_training is not None else 0.0
            if deadline is not None and time.monotonic() + self._epoch_seconds + tail > deadline:
                self.hit = True
                self.model.stop_training = True

    return StopAtDeadline()


@dataclass
class NetworkRecipe:
    """A trained `build_mlp` network not yet built as a Keras model: its shape arguments and weights.

    The fold towers yield five networks per trial and most trials never join the final model;
    building a functional Keras model costs ~70 ms, so a network from the towers is built on
    first use only, and the run store keeps it as weights.
    """

    n_inputs: int
    weights: list[np.ndarray] = field(repr=False)
    prefix: str = ""
    name: str | None = None
    cardinalities: tuple[int, ...] = ()

    @property
    def n_parameters(self) -> int:
        return int(sum(w.size for w in self.weights))

    def build(self, params: dict[str, Any], task: str, n_classes: int):
        network = build_mlp(
            params,
            self.n_inputs,
            task,
            n_classes,
            prefix=self.prefix,
            cardinalities=tuple(self.cardinalities),
            name=self.name,
        )
        network.set_weights(self.weights)
        return network


class KerasTabularModel(BaseEstimator):
    """An MLP (or any network from `params`) trained with an inner validation split for early stopping.

    `fit` carves `validation_fraction` of the rows it is given (stratified for classification) to
    watch the validation loss; the rows it is scored on later never steer training.
    """

    def __init__(
        self,
        *,
        task: str = "binary",
        n_classes: int = 2,
        params: dict[str, Any] | None = None,
        max_epochs: int = 100,
        patience: int = 10,
        validation_fraction: float = 0.15,
        seed: int = 0,
        deadline: float | None = None,
    ) -> None:
        self.task = task
        self.n_classes = n_classes
        self.params = params
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.deadline = deadline

    @property
    def model_(self):
        """The Keras network; one from the fold towers is built from its recipe on first use."""
        network = self.__dict__.get("_network")
        if network is None:
            recipe = self.__dict__.get("_recipe")
            if recipe is None:
                raise AttributeError("model_: the estimator is not fitted")
            network = recipe.build(dict(self.params or {}), self.task, self.n_classes)
            self._network, self._recipe = network, None
        return network

    @model_.setter
    def model_(self, network) -> None:
        self._network, self._recipe = network, None

    @property
    def held_as_weights(self) -> bool:
        """Whether the network is still a recipe (weights), not built: saving it needs no Keras."""
        return self.__dict__.get("_recipe") is not None

    def fit(self, X, y) -> KerasTabularModel:
        keras = import_keras()

        params = dict(self.params or {})
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        keras.utils.set_random_seed(self.seed)
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(np.mean(y)), float(np.std(y) or 1.0)
            y_fit = ((y - self.y_mean_) / self.y_std_).astype(np.float32)
        else:
            self.classes_ = np.arange(self.n_classes)
            y_fit = y.astype(np.int64)
        X_train, X_valid, y_train, y_valid = self._inner_split(X, y_fit)
        batch_size = int(min(params.get("batch_size", 64), max(8, len(X_train))))
        steps = math.ceil(len(X_train) / batch_size)
        model = build_mlp(params, X.shape[1], self.task, self.n_classes)
        model.compile(
            optimizer=build_optimizer(params, steps, self.max_epochs),
            loss=loss_for(self.task),
            steps_per_execution=max(1, min(32, steps)),
        )
        stopper = _deadline_callback(self.deadline)
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True
            ),
            stopper,
        ]
        if params.get("lr_schedule") == "reduce_on_plateau":
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss", factor=0.3, patience=max(2, self.patience // 3)
                )
            )
        fit_started = time.perf_counter()
        history = model.fit(
            X_train,
            y_train,
            validation_data=(X_valid, y_valid),
            epochs=self.max_epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            verbose=0,
            shuffle=True,
        )
        self.train_seconds_ = time.perf_counter() - fit_started  # inside Keras' fit: training proper
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}
        losses = self.history_.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            raise TrainingDiverged(f"training loss became {losses[-1] if losses else 'undefined'}")
        val_losses = self.history_.get("val_loss", losses)
        self.best_epoch_ = int(np.nanargmin(val_losses)) + 1
        self.epochs_trained_ = len(losses)
        self.stopped_at_deadline_ = stopper.hit
        self.n_parameters_ = int(model.count_params())
        self.model_ = model
        self.n_features_in_ = X.shape[1]
        return self

    def _inner_split(self, X, y):
        train, valid = inner_split(y, task=self.task, fraction=self.validation_fraction, seed=self.seed)
        return X[train], X[valid], y[train], y[valid]

    @classmethod
    def from_trained(
        cls, model, *, history: dict, stopped_at_deadline: bool, y_scale=None, **init
    ) -> KerasTabularModel:
        """Wrap a network trained elsewhere (a Keras model, or a NetworkRecipe from the fold
        towers, built when first needed) as a fitted estimator."""
        estimator = cls(**init)
        if isinstance(model, NetworkRecipe):
            estimator._network, estimator._recipe = None, model
            estimator.n_parameters_ = model.n_parameters
            estimator.n_features_in_ = model.n_inputs
        else:
            estimator.model_ = model
            estimator.n_parameters_ = int(model.count_params())
            estimator.n_features_in_ = int(model.inputs[0].shape[-1])
        estimator.history_ = history
        val_losses = history.get("val_loss") or history.get("loss") or [0.0]
        estimator.best_epoch_ = int(np.nanargmin(val_losses)) + 1
        estimator.epochs_trained_ = len(history.get("loss", val_losses))
        estimator.stopped_at_deadline_ = stopped_at_deadline
        if estimator.task == "regression":
            estimator.y_mean_, estimator.y_std_ = y_scale
        else:
            estimator.classes_ = np.arange(estimator.n_classes)
        return estimator

    def _raw_predict(self, X) -> np.ndarray:
        keras = import_keras()

        X = np.asarray(X, dtype=np.float32)
        chunks = [
            keras.ops.convert_to_numpy(self.model_(X[start : start + PREDICT_CHUNK], training=False))
            for start in range(0, len(X), PREDICT_CHUNK)
        ]
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 1))

    def scores_from_output(self, out: np.ndarray) -> np.ndarray:
        """What `predict_scores` gives for rows on which the network's raw output is `out`
        (class probabilities, or values): the towers score held-out rows in the stacked model."""
        if self.task == "regression":
            return np.asarray(out, dtype=float).reshape(-1) * self.y_std_ + self.y_mean_
        return self._proba(out)  # float64 rows that sum to 1 already

    @staticmethod
    def _proba(out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=float)
        if out.ndim == 1 or out.shape[1] == 1:  # one sigmoid unit: the positive class
            p = np.clip(out.reshape(-1), 0.0, 1.0)
            return np.column_stack([1 - p, p])
        return out / out.sum(axis=1, keepdims=True)

    def predict_proba(self, X) -> np.ndarray:
        return self._proba(self._raw_predict(X))

    def predict(self, X) -> np.ndarray:
        if self.task == "regression":
            return self._raw_predict(X).reshape(-1) * self.y_std_ + self.y_mean_
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, folder: Path, *, native: bool = True) -> None:
        """Write the network as `model.keras` and the estimator's settings as `estimator.json`.

        With `native=False` a network not yet built (a NetworkRecipe) is written as its weights
        (`network.npz`, recipe in `estimator.json`) instead: the run store's format, which
        costs no Keras build. A saved model folder is always native.
        """
        folder.mkdir(parents=True, exist_ok=True)
        recipe = self.__dict__.get("_recipe")
        state = {
            "init": {**self.get_params(), "deadline": None},
            "y_mean": getattr(self, "y_mean_", None),
            "y_std": getattr(self, "y_std_", None),
            "n_features_in": self.n_features_in_,
        }
        if recipe is not None and not native:
            np.savez(folder / "network.npz", *recipe.weights)
            state["recipe"] = {
                "n_inputs": recipe.n_inputs,
                "prefix": recipe.prefix,
                "name": recipe.name,
                "cardinalities": list(recipe.cardinalities),
            }
        else:
            self.model_.save(folder / "model.keras")
        (folder / "estimator.json").write_text(json.dumps(state, indent=1, default=str))

    @classmethod
    def load(cls, folder: Path) -> KerasTabularModel:
        """Load with Keras safe mode (or from weights and a recipe): no code from the file is run."""
        state = json.loads((folder / "estimator.json").read_text())
        estimator = cls(**state["init"])
        if "recipe" in state:
            with np.load(folder / "network.npz", allow_pickle=False) as stored:
                weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
            recipe = NetworkRecipe(weights=weights, **state["recipe"])
            # built now, so that weights that do not fit the recipe fail the load, not a prediction
            estimator.model_ = recipe.build(dict(estimator.params or {}), estimator.task, estimator.n_classes)
            estimator.n_parameters_ = recipe.n_parameters
        else:
            keras = import_keras()
            estimator.model_ = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
        estimator.n_features_in_ = state["n_features_in"]
        if estimator.task == "regression":
            estimator.y_mean_, estimator.y_std_ = state["y_mean"], state["y_std"]
        else:
            estimator.classes_ = np.arange(estimator.n_classes)
        return estimator


def keras_candidate(
    name: str,
    params: dict[str, Any],
    *,
    fixed: dict[str, Any],
    task: str,
    n_classes: int,
    seed: int,
    deadline: float | None = None,
):
    """A Candidate that trains a KerasTabularModel with `params` on dense-preprocessed features."""
    from autodl.candidates.base import Candidate

    def make(profile) -> KerasTabularModel:
        return KerasTabularModel(
            task=task,
            n_classes=n_classes,
            params=params,
            max_epochs=int(fixed["max_epochs"]),
            patience=int(fixed["patience"]),
            validation_fraction=float(fixed["validation_fraction"]),
            seed=seed,
            deadline=deadline,
        )

    scaling = str(params.get("numeric_scaling", "standard"))
    return Candidate(name, "keras", "dense", make, dict(params), numeric_scaling=scaling)
