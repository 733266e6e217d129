"""Keras Tuner hypermodels driven by Optuna: a user's `build_model(hp)` or HyperModel runs unchanged.

`--space module:build_model` (or `path/to/file.py:MyHyperModel`) loads the user's function,
HyperModel subclass or instance. Each Optuna trial gets a keras_tuner.HyperParameters whose
`Int`, `Float`, `Choice`, `Boolean`, `Fixed` and `conditional_scope` sample from the trial, so
the same build code works. `HyperModel.fit` overrides are respected. Because a user's network
is opaque, its k folds are trained as k separate fits, and the trial reports the running mean
of the fold scores after each fold (steps are folds).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from autodl.candidates.keras_model import KerasTabularModel, TrainingDiverged, _deadline_callback, inner_split
from autodl.errors import ConfigError
from autodl.metrics import Metric
from autodl.preprocess import build_preprocessor
from autodl.runtime import import_keras
from autodl.tuning.cv import CVResult, DeadlineReached, DevData, FoldCollector

LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "regression": "mse",
}


def load_hypermodel(spec: str):
    """The keras_tuner.HyperModel named by `spec` ('module:attr' or 'path/file.py:attr')."""
    import_keras()
    import keras_tuner

    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(
                    f"hypermodel file not found: {path}", "check the path before ':' in --space"
                )
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"cannot import {module_name!r} for --space {spec} ({error})",
            "make the module importable (run from its folder or install it), or pass path/to/file.py:name",
        ) from error
    if not hasattr(module, attr):
        raise ConfigError(
            f"{module_name} has no attribute {attr!r}", f"check the name after ':' in --space {spec}"
        )
    target = getattr(module, attr)
    if isinstance(target, type) and issubclass(target, keras_tuner.HyperModel):
        return target()
    if isinstance(target, keras_tuner.HyperModel):
        return target
    if callable(target):
        return _function_hypermodel(target)
    raise ConfigError(
        f"{spec} is neither a build_model(hp) function nor a keras_tuner.HyperModel",
        "point --space at a function taking hp, or at a HyperModel subclass",
    )


def _function_hypermodel(build):
    import keras_tuner

    class FunctionHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            return build(hp)

    return FunctionHyperModel(name=getattr(build, "__name__", "build_model"))


def optuna_hyperparameters(trial):
    """A keras_tuner.HyperParameters whose new, active parameters are sampled from `trial`."""
    import keras_tuner
    from keras_tuner.engine import hyperparameters as hp_module

    class OptunaHyperParameters(keras_tuner.HyperParameters):
        def _register(self, hyperparameter, overwrite=False):
            value = super()._register(hyperparameter, overwrite)
            if not self.is_active(hyperparameter):
                return value
            sampled = _suggest(trial, hyperparameter, hp_module)
            self.values[hyperparameter.name] = sampled
            return sampled

    return OptunaHyperParameters()


def _suggest(trial, hp, hp_module) -> Any:
    if isinstance(hp, hp_module.Fixed):
        return hp.value
    if isinstance(hp, hp_module.Boolean):
        return trial.suggest_categorical(hp.name, [False, True])
    if isinstance(hp, hp_module.Choice):
        return trial.suggest_categorical(hp.name, list(hp.values))
    log = getattr(hp, "sampling", "linear") == "log"
    step = None if log else hp.step
    if isinstance(hp, hp_module.Int):
        return trial.suggest_int(hp.name, hp.min_value, hp.max_value, step=step or 1, log=log)
    return trial.suggest_float(hp.name, hp.min_value, hp.max_value, step=step, log=log)


class HyperModelTrials:
    """Trials from a Keras Tuner hypermodel: k separate fold fits per trial."""

    def __init__(
        self, spec: str, *, max_epochs: int = 100, patience: int = 10, validation_fraction: float = 0.15
    ) -> None:
        self.spec = spec
        self.hypermodel = load_hypermodel(spec)
        self.max_epochs, self.patience, self.validation_fraction = max_epochs, patience, validation_fraction

    def warm_start_points(self) -> list[dict]:
        return []

    def evaluate(
        self, trial, data: DevData, metric: Metric, *, seed: int, deadline: float | None, report
    ) -> CVResult:
        keras = import_keras()
        collected = FoldCollector(data, metric)
        for fold in data.folds:
            keras.utils.set_random_seed(seed)
            y = data.y[fold.train]
            pre = build_preprocessor(data.profile, "dense")
            X = np.asarray(pre.fit_transform(data.features.iloc[fold.train], y), dtype=np.float32)
            times = None if data.times is None else data.times[fold.train]
            train, valid = inner_split(
                y, task=data.task, fraction=self.validation_fraction, seed=seed, times=times
            )
            hp = optuna_hyperparameters(trial)
            model = self.hypermodel.build(hp)
            if not getattr(model, "compiled", False):  # Keras Tuner's convention is a compiled model
                model.compile(optimizer="adam", loss=LOSSES[data.task])
            stopper = _deadline_callback(deadline)
            callbacks = [
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                ),
                stopper,
            ]
            history = self.hypermodel.fit(
                hp,
                model,
                X[train],
                y[train],
                validation_data=(X[valid], y[valid]),
                epochs=self.max_epochs,
                callbacks=callbacks,
                verbose=0,
            )
            if stopper.hit:
                raise DeadlineReached(f"time limit reached during fold {fold.index + 1} of {len(data.folds)}")
            logged = getattr(history, "history", {}) or {}
            losses = [float(v) for v in logged.get("loss", [])]
            if losses and not np.all(np.isfinite(losses)):
                raise TrainingDiverged(f"training loss became {losses[-1]}")
            estimator = KerasTabularModel.from_trained(
                model,
                history={k: [float(v) for v in vals] for k, vals in logged.items()},
                stopped_at_deadline=False,
                y_scale=(0.0, 1.0),
                task=data.task,
                n_classes=data.n_classes,
                params=dict(hp.values),
                max_epochs=self.max_epochs,
                patience=self.patience,
                seed=seed,
            )
            pipeline = Pipeline([("preprocess", pre), ("model", estimator)])
            detail = {
                "history": estimator.history_,
                "epochs": len(losses),
                "n_parameters": estimator.n_parameters_,
            }
            running = collected.add(fold, pipeline, detail)
            report(fold.index, running, f"fold {fold.index + 1} (running mean {running:.4f})")
        return collected.result()
