"""k-fold cross-validation of one candidate: preprocessing and model fitted inside each fold."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from autodl.candidates.base import Candidate, predict_scores
from autodl.data.profile import TableProfile
from autodl.metrics import Metric
from autodl.preprocess import build_preprocessor
from autodl.split import Fold, held_out_rows

# Transformed fold rows kept for the next candidate of the same preprocessing, up to this many
# bytes a search: the baselines of one style would otherwise each fit an equal preprocessor on
# every fold and transform the same rows again (~0.05-0.13 s a fold on the shared tables). Both
# styles' 5 folds take 0.2-27 MB on those tables (lending_club, 9,857 rows: 27 MB); a million-row
# table keeps none (its peak memory is a few hundred MB under the 6 GiB target) and transforms
# as a pipeline does.
SHARED_FOLD_FEATURES_BYTES = 64 * 2**20


class DeadlineReached(RuntimeError):
    """The time limit ran out inside a fold; the candidate's CV score is incomplete."""


@dataclass
class CVResult:
    """Per-fold scores, out-of-fold predictions (averaged over repeats) and the fitted fold models."""

    fold_scores: list[float]
    oof: np.ndarray
    models: list[Pipeline]
    fit_seconds: float
    fold_details: list[dict] = field(default_factory=list)
    predict_seconds: float = 0.0  # the fold models' predictions on their held-out rows, in all

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))

    @property
    def seconds_to_first_epoch(self) -> float | None:
        """About how long this CV took to train every fold model for one epoch: its time outside
        training plus one epoch of each fold's training (None without per-epoch details)."""
        epochs = [(d.get("train_seconds"), d.get("epochs")) for d in self.fold_details]
        if not epochs or any(seconds is None or not count for seconds, count in epochs):
            return None
        training = sum(seconds for seconds, _ in epochs)
        return self.fit_seconds - training + sum(seconds / count for seconds, count in epochs)


@dataclass(frozen=True)
class DevData:
    """The development rows (everything but the test split) and their CV folds."""

    features: pd.DataFrame
    y: np.ndarray
    folds: list[Fold]
    profile: TableProfile
    task: str
    n_classes: int
    times: np.ndarray | None = None  # of the rows, when the folds are time-ordered (--time-column)
    groups: np.ndarray | None = None  # of the rows, when the folds keep groups whole (--group-column)

    @functools.cached_property
    def held_out(self) -> np.ndarray:
        """The rows some fold holds out, the only ones with out-of-fold predictions."""
        return held_out_rows(self.folds)

    @functools.cached_property
    def fold_features(self) -> FoldFeatureCache:
        """Each fold's fitted preprocessing and transformed rows, shared by the candidates."""
        return FoldFeatureCache(SHARED_FOLD_FEATURES_BYTES)


class FoldFeatureCache:
    """Each fold's fitted preprocessor and transformed rows by preprocessing choice, kept while
    their bytes fit the budget.

    The training rows are transformed before the model's fit and the held-out rows after it, as
    a pipeline does: on a table too large to keep, the two never take memory at once. The arrays
    it hands out are read-only, so that a model writing into its input fails loudly instead of
    changing the rows the next candidate trains on. Pickled (to a worker process) it leaves its
    entries behind.
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._fitted: dict[tuple, tuple[object, object]] = {}
        self._held_out: dict[tuple, tuple[object, float]] = {}
        self._used = 0

    def __reduce__(self):
        return (FoldFeatureCache, (self._budget,))

    def fitted(self, data: DevData, fold: Fold, style: str, numeric_scaling: str) -> tuple[object, object]:
        """The preprocessor fitted on the fold's training rows, and those rows transformed.
        `data`: the DevData that holds this cache."""
        key = (fold.repeat, fold.index, style, numeric_scaling)
        if key not in self._fitted:
            preprocess = build_preprocessor(data.profile, style, numeric_scaling)
            train = preprocess.fit_transform(data.features.iloc[fold.train], data.y[fold.train])
            if not self._keep(train):
                return preprocess, train
            self._fitted[key] = (preprocess, train)
        return self._fitted[key]

    def held_out(
        self, data: DevData, fold: Fold, style: str, numeric_scaling: str, preprocess
    ) -> tuple[object, float]:
        """The fold's held-out rows transformed by `preprocess` (from `fitted`), and the seconds
        that took: part of what predicting them costs."""
        key = (fold.repeat, fold.index, style, numeric_scaling)
        if key not in self._held_out:
            started = time.perf_counter()
            valid = preprocess.transform(data.features.iloc[fold.valid])
            entry = (valid, time.perf_counter() - started)
            if key not in self._fitted or not self._keep(valid):
                return entry
            self._held_out[key] = entry
        return self._held_out[key]

    def _keep(self, matrix) -> bool:
        size = _read_only_nbytes(matrix)
        if self._used + size > self._budget:
            return False
        self._used += size
        return True


def _read_only_nbytes(matrix) -> float:
    """The bytes of a transformed matrix, now read-only; infinite for a kind not known here."""
    if isinstance(matrix, np.ndarray):
        matrix.flags.writeable = False
        return matrix.nbytes
    return float("inf")


class FoldCollector:
    """Gathers what cross-validation yields: per-fold scores, out-of-fold predictions (averaged
    over repeats), fold models and their details."""

    def __init__(self, data: DevData, metric: Metric, started: float | None = None) -> None:
        self.data, self.metric = data, metric
        shape = (len(data.y), data.n_classes) if data.n_classes else (len(data.y),)
        self.oof_sum, self.oof_count = np.zeros(shape), np.zeros(len(data.y))
        self.scores: list[float] = []
        self.models: list[Pipeline] = []
        self.details: list[dict] = []
        self.predict_seconds = 0.0
        self.started = time.perf_counter() if started is None else started

    def add(
        self,
        fold: Fold,
        pipeline: Pipeline,
        detail: dict,
        prediction: np.ndarray | None = None,
        predict_seconds: float = 0.0,
    ) -> float:
        """Score `pipeline` on the fold's held-out rows; returns the running mean of fold scores.

        `prediction`: the pipeline's `predict_scores` on those rows, when the caller has it already
        (and `predict_seconds`, what computing it cost).
        """
        if prediction is None:
            predict_started = time.perf_counter()
            prediction = predict_scores(pipeline, self.data.features.iloc[fold.valid], self.data.n_classes)
            predict_seconds = time.perf_counter() - predict_started
        self.predict_seconds += predict_seconds
        self.scores.append(self.metric(self.data.y[fold.valid], prediction))
        self.oof_sum[fold.valid] += prediction
        self.oof_count[fold.valid] += 1
        self.models.append(pipeline)
        self.details.append(detail)
        return float(np.mean(self.scores))

    def result(self) -> CVResult:
        counts = np.maximum(self.oof_count, 1).reshape(-1, *([1] * (self.oof_sum.ndim - 1)))
        return CVResult(
            self.scores,
            self.oof_sum / counts,
            self.models,
            time.perf_counter() - self.started,
            self.details,
            self.predict_seconds,
        )


def cross_validate(
    candidate: Candidate,
    data: DevData,
    metric: Metric,
    *,
    after_fold: Callable[[int, float], None] | None = None,
    during_fold: Callable[[float | None], None] | None = None,
) -> CVResult:
    """Fit `candidate` on each fold's training rows and score it on the fold's held-out rows.

    `after_fold(i, fold_score)` runs after each fold and may raise to prune. `during_fold(share)`
    runs between the steps of a model that fits in steps (`fit(..., on_progress=...)`), with the
    share of its fit done (None: unknown), and may raise to stop it.
    """
    collected = FoldCollector(data, metric)
    for fold in data.folds:
        pipeline = _fit_on_fold(candidate, data, fold, during_fold)
        model = pipeline[-1]
        if getattr(model, "stopped_at_deadline_", False):
            raise DeadlineReached(f"time limit reached during fold {fold.index + 1} of {len(data.folds)}")
        if candidate.style == "none":
            collected.add(fold, pipeline, _fold_detail(model))
        else:
            preprocessing = (candidate.style, candidate.numeric_scaling, pipeline[0])
            valid, transform_seconds = data.fold_features.held_out(data, fold, *preprocessing)
            predict_started = time.perf_counter()
            prediction = predict_scores(model, valid, data.n_classes)
            predict_seconds = time.perf_counter() - predict_started + transform_seconds
            collected.add(fold, pipeline, _fold_detail(model), prediction, predict_seconds)
        if after_fold is not None:
            after_fold(fold.index, collected.scores[-1])
    return collected.result()


def _fit_on_fold(
    candidate: Candidate, data: DevData, fold: Fold, during_fold: Callable[[float | None], None] | None
) -> Pipeline:
    """The candidate's pipeline fitted on the fold's training rows; its preprocessor is the
    fold's shared one (see FoldFeatureCache)."""
    pipeline = candidate.make_pipeline(data.profile)
    model = pipeline[-1]
    watched = during_fold is not None and "on_progress" in inspect.signature(model.fit).parameters
    progress = {"on_progress": during_fold} if watched else {}
    if candidate.style == "none":  # a model that ignores the features
        progress = {f"model__{name}": value for name, value in progress.items()}
        return pipeline.fit(data.features.iloc[fold.train], data.y[fold.train], **progress)
    preprocess, train = data.fold_features.fitted(data, fold, candidate.style, candidate.numeric_scaling)
    model.fit(train, data.y[fold.train], **progress)
    return Pipeline([("preprocess", preprocess), ("model", model)])


def _fold_detail(model) -> dict:
    if not hasattr(model, "history_"):
        return {}
    return {
        "history": model.history_,
        "best_epoch": model.best_epoch_,
        "epochs": model.epochs_trained_,
        "n_parameters": model.n_parameters_,
        "train_seconds": getattr(model, "train_seconds_", 0.0),
    }
