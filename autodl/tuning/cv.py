"""k-fold cross-validation of one candidate: preprocessing and model fitted inside each fold."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from autodl.candidates.base import Candidate, predict_scores
from autodl.data.profile import TableProfile
from autodl.metrics import Metric
from autodl.split import Fold


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

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))


@dataclass(frozen=True)
class DevData:
    """The development rows (everything but the test split) and their CV folds."""

    features: pd.DataFrame
    y: np.ndarray
    folds: list[Fold]
    profile: TableProfile
    task: str
    n_classes: int


def cross_validate(
    candidate: Candidate,
    data: DevData,
    metric: Metric,
    *,
    after_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """Fit `candidate` on each fold's training rows and score it on the fold's held-out rows.

    `after_fold(i, running_mean)` runs after each fold; it may raise to stop (pruning).
    """
    started = time.perf_counter()
    shape = (len(data.y), data.n_classes) if data.n_classes else (len(data.y),)
    oof_sum, oof_count = np.zeros(shape), np.zeros(len(data.y))
    scores, models, details = [], [], []
    for fold in data.folds:
        pipeline = candidate.make_pipeline(data.profile)
        pipeline.fit(data.features.iloc[fold.train], data.y[fold.train])
        model = pipeline[-1]
        if getattr(model, "stopped_at_deadline_", False):
            raise DeadlineReached(f"time limit reached during fold {fold.index + 1} of {len(data.folds)}")
        prediction = predict_scores(pipeline, data.features.iloc[fold.valid], data.n_classes)
        scores.append(metric(data.y[fold.valid], prediction))
        oof_sum[fold.valid] += prediction
        oof_count[fold.valid] += 1
        models.append(pipeline)
        details.append(_fold_detail(model))
        if after_fold is not None:
            after_fold(fold.index, float(np.mean(scores)))
    counts = oof_count.reshape(-1, *([1] * (oof_sum.ndim - 1)))
    return CVResult(scores, oof_sum / np.maximum(counts, 1), models, time.perf_counter() - started, details)


def _fold_detail(model) -> dict:
    if not hasattr(model, "history_"):
        return {}
    return {
        "history": model.history_,
        "best_epoch": model.best_epoch_,
        "epochs": model.epochs_trained_,
        "n_parameters": model.n_parameters_,
    }
