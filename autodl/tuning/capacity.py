"""The capacity check: before searching, the largest network in the space must be able to overfit.

Following the book's advice (first get a model that can overfit, then regularise), the biggest
configuration, with regularisation off, trains on a small sample; if it cannot bring the training
loss well below that of predicting the prior, the data or the space is wrong and searching it
would only burn the budget.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from autodl.candidates.builders import build_mlp, build_optimizer, loss_for
from autodl.preprocess import build_preprocessor
from autodl.runtime import import_keras, release_keras_memory, start_keras_import, wait_for_keras_import
from autodl.spaces.schema import SearchSpace
from autodl.tuning.cv import DevData

SAMPLE_ROWS = 256
MAX_EPOCHS = 150
TARGET_RATIO = 0.5
REGULARISERS = ("dropout", "l1", "l2", "weight_decay")


@dataclass(frozen=True)
class CapacityReport:
    """The check's outcome; `passed` is False only when the network had its epochs and failed."""

    passed: bool
    reference_loss: float
    final_loss: float
    epochs: int
    seconds: float
    params: dict[str, Any]
    nothing_to_learn: bool = False
    cut_short: bool = False

    def describe(self) -> str:
        if self.nothing_to_learn:
            return (
                f"capacity check: nothing to overfit in a {SAMPLE_ROWS}-row sample (rows with the same "
                f"features have different targets once preprocessed), so it tells nothing; searching anyway ({self.seconds:.1f}s)"
            )
        losses = f"training loss {self.final_loss:.3f} vs {self.reference_loss:.3f} for the prior, {self.epochs} epochs, {self.seconds:.1f}s"
        if self.cut_short:
            return f"capacity check: cut short by the time limit ({losses})"
        verdict = "can overfit" if self.passed else "cannot overfit"
        return f"capacity check: the largest network {verdict} a {SAMPLE_ROWS}-row sample ({losses})"


def largest_params(space: SearchSpace) -> dict[str, Any]:
    """The space's biggest, least regularised configuration."""
    point: dict[str, Any] = {}
    for param in space.params:
        if any(point.get(name) != value for name, value in param.when.items()):
            continue
        value = _largest(param)
        if param.per_layer:
            point.update({f"{param.name}_{i}": value for i in range(int(point.get("n_layers", 1)))})
        else:
            point[param.name] = value
    return point


def _largest(param) -> Any:
    if param.type == "categorical":
        preferred = {
            "optimizer": "adam",
            "lr_schedule": "constant",
            "batch_norm": False,
            "activation": "relu",
        }
        if param.name in preferred and preferred[param.name] in param.choices:
            return preferred[param.name]
        return min(param.choices) if param.name == "batch_size" else param.choices[0]
    if param.name in REGULARISERS:
        return param.low
    if param.name == "learning_rate":
        return float(np.clip(1e-3, param.low, param.high))
    return param.high


def check_capacity(
    space: SearchSpace, data: DevData, *, seed: int, cancel: threading.Event | None = None
) -> CapacityReport:
    """Train the largest configuration on a sample of the development rows, regularisation off.

    Setting `cancel` ends the training after the current epoch (the report then says it was
    cut short, and passes)."""
    keras = import_keras()
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data.y), size=min(SAMPLE_ROWS, len(data.y)), replace=False)
    features, y = data.features.iloc[rows], data.y[rows]
    X = np.asarray(build_preprocessor(data.profile, "dense").fit_transform(features, y), dtype=np.float32)
    y_fit = (
        ((y - y.mean()) / (y.std() or 1.0)).astype(np.float32)
        if data.task == "regression"
        else y.astype(np.int64)
    )
    reference = _loss_of_best_constant(data.task, y_fit)
    # Rows with identical features but different targets cannot be told apart: the best
    # achievable loss is the same quantity within each group of identical rows.
    groups = np.unique(np.round(X, 6), axis=0, return_inverse=True)[1].reshape(-1)
    floor = sum(
        _loss_of_best_constant(data.task, y_fit[groups == g]) * np.mean(groups == g)
        for g in np.unique(groups)
    )
    params = largest_params(space)
    if reference - floor < 1e-2:  # nothing learnable in the sample: no capacity question to answer
        return CapacityReport(
            True, reference, reference, 0, time.perf_counter() - started, params, nothing_to_learn=True
        )
    release_keras_memory()
    keras.utils.set_random_seed(seed)
    model = build_mlp(params, X.shape[1], data.task, data.n_classes)
    batch_size = int(min(params.get("batch_size", 32), len(X)))
    model.compile(
        optimizer=build_optimizer({**params, "lr_schedule": "constant"}, 1, MAX_EPOCHS),
        loss=loss_for(data.task),
    )
    target = floor + TARGET_RATIO * (reference - floor)
    # Full batches of a fresh shuffle each epoch, through train_on_batch: `fit` spent ~65 ms an
    # epoch setting up its data pipeline and callbacks (8 steps of ~16 ms each), and a last
    # partial batch would trace the training step a second time (~1.4 s).
    n_batches = len(X) // batch_size
    losses: list[float] = []
    for _ in range(MAX_EPOCHS):
        order = rng.permutation(len(X))[: n_batches * batch_size].reshape(n_batches, batch_size)
        losses.append(float(np.mean([model.train_on_batch(X[rows], y_fit[rows]) for rows in order])))
        if losses[-1] <= target or not np.isfinite(losses[-1]) or (cancel and cancel.is_set()):
            break
    final = float(np.nanmin(losses)) if np.isfinite(losses).any() else float("inf")
    passed = final <= target + 1e-3
    cut_short = not passed and cancel is not None and cancel.is_set()
    seconds = time.perf_counter() - started
    return CapacityReport(
        passed or cut_short, reference, final, len(losses), seconds, params, cut_short=cut_short
    )


class CapacityCheckInBackground:
    """`check_capacity` in a thread, started while the last baseline fits.

    The check (~2-3 s, mostly tracing the largest network's training step) would otherwise
    run alone between the baselines and the trials. The last baseline is usually the SVM,
    which fits on one core without the GIL, so the check (and the Keras import in front of it)
    mostly runs on the other (beside a forest on a large table, it shares the cores for those
    seconds). It only starts from `start()`, and `report()` starts it if nothing did (e.g. the
    last baseline was skipped).
    """

    def __init__(self, space: SearchSpace, data: DevData, *, seed: int) -> None:
        self._cancelled = threading.Event()
        self._run = lambda: check_capacity(space, data, seed=seed, cancel=self._cancelled)
        self._thread: threading.Thread | None = None
        self._outcome: CapacityReport | BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        # The thread waits for this import instead of making its own: import_keras silences
        # file descriptor 2 process-wide, which from a thread would swallow the search's messages.
        start_keras_import()
        self._thread = threading.Thread(target=self._target, name="autodl-capacity", daemon=True)
        self._thread.start()

    def _target(self) -> None:
        try:
            wait_for_keras_import()
            if "keras" in sys.modules:  # else report() repeats the failed import, to raise its error
                self._outcome = self._run()
        except BaseException as error:  # handed to the search's thread by report()
            self._outcome = error

    def cancel(self) -> None:
        """Stop the check after its current epoch, if it runs, and wait for its thread: a
        search that ends without its Keras stage must not leave it training."""
        self._cancelled.set()
        if self._thread is not None:
            self._thread.join()

    def report(self, deadline: float | None = None) -> CapacityReport:
        """The check's report, once it has finished or, at `deadline` (time.monotonic()), been
        cut short; raises what the check raised."""
        self.start()
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self.cancel()
        if self._outcome is None:  # the background import failed
            import_keras()
            self._outcome = self._run()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


def _loss_of_best_constant(task: str, y: np.ndarray) -> float:
    """Squared error of the mean (regression) or cross-entropy of the class shares."""
    if task == "regression":
        return float(np.var(y))
    shares = np.bincount(y) / len(y)
    shares = shares[shares > 0]
    return float(-np.sum(shares * np.log(shares)))
