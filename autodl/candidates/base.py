"""A candidate: a named, parameterised recipe for an unfitted preprocessing + model pipeline."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from joblib import parallel_config
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from autodl.data.profile import TableProfile
from autodl.preprocess import build_preprocessor

# Below this many rows, predicting in one thread is quicker than joblib's thread pool: a
# 300-tree forest answered 50 rows in ~50 ms sequentially, ~125 ms on 2 threads (even at 500
# rows, ~150 vs ~170 ms). Such small calls are a served request or MLflow's input example.
SEQUENTIAL_PREDICT_ROWS = 256


@dataclass(frozen=True)
class Candidate:
    """`make_estimator(profile)` builds a fresh estimator; `style` picks the preprocessing
    (a `build_preprocessor` style, or "none" for an estimator that ignores the features), and
    `numeric_scaling` how it scales numbers."""

    name: str
    family: str
    style: str
    make_estimator: Callable[[TableProfile], BaseEstimator]
    params: dict = field(default_factory=dict)
    numeric_scaling: str = "standard"

    def make_pipeline(self, profile: TableProfile) -> Pipeline:
        return Pipeline(
            [
                (
                    "preprocess",
                    "passthrough"
                    if self.style == "none"
                    else build_preprocessor(profile, self.style, self.numeric_scaling),
                ),
                ("model", self.make_estimator(profile)),
            ]
        )


def predict_scores(pipeline: Pipeline, features, n_classes: int) -> np.ndarray:
    """Class probabilities (n_rows x n_classes, columns in class-index order) or regression values."""
    small = len(features) < SEQUENTIAL_PREDICT_ROWS
    with parallel_config(backend="sequential") if small else nullcontext():
        if n_classes == 0:
            return np.asarray(pipeline.predict(features), dtype=float).reshape(-1)
        proba = np.asarray(pipeline.predict_proba(features), dtype=float)
    # A model fitted on float32 features gives float32 probabilities: rows sum to 1 only within
    # ~1e-7, which log loss would warn about.
    proba /= proba.sum(axis=1, keepdims=True)
    seen = np.asarray(pipeline.classes_, dtype=int)
    if len(seen) == n_classes and np.array_equal(seen, np.arange(n_classes)):
        return proba
    aligned = np.zeros((proba.shape[0], n_classes))
    aligned[:, seen] = proba
    return aligned
