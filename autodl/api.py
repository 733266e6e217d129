"""The Python API: `search()` and scikit-learn style estimators, thin layers over run_search."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from autodl.config import SearchConfig
from autodl.model import TabularModel
from autodl.orchestrate import run_search
from autodl.result import SearchResult

TARGET_COLUMN = "__autodl_target__"
GROUPS_COLUMN = "groups"  # the name `fit(X, y, groups=...)` labels get in messages


def search(
    data: str | Path | pd.DataFrame,
    *,
    target: str,
    trials: int | None = None,
    time_limit: float | None = 120.0,
    tracking: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "autodl",
    reporter=None,
    **settings: Any,
) -> SearchResult:
    """Search for the best model for `target` in `data` (a CSV/Parquet path or a DataFrame).

    `settings` are SearchConfig fields (task, metric, folds, repeats, test_size, space, seed,
    output_dir, ...). Logs to MLflow unless `tracking=False`.
    """
    config = SearchConfig(
        target=target,
        trials=trials,
        time_limit=time_limit,
        tracking=tracking,
        tracking_uri=tracking_uri,
        experiment=experiment,
        **settings,
    )
    return run_search(config, data, reporter=reporter, tracker=make_tracker(config))


def make_tracker(config: SearchConfig):
    """The MLflow tracker for `config`, or None when tracking is off."""
    if not config.tracking:
        return None
    from autodl.tracking.mlflow import MlflowTracker

    name = Path(config.output_dir).name if config.output_dir else None
    return MlflowTracker(
        uri=config.tracking_uri, experiment=config.experiment, run_name=name or "autodl-search"
    )


def load_model(path: str | Path) -> TabularModel:
    """Load a model folder written by a search (`result.model_dir`)."""
    return TabularModel.load(path)


class _AutoDLEstimator(BaseEstimator):
    _task: str | None = None

    def __init__(
        self,
        *,
        time_limit: float | None = 60.0,
        trials: int | None = None,
        folds: int = 5,
        metric: str | None = None,
        space: str = "mlp",
        final: str = "ensemble",
        seed: int = 0,
        tracking: bool = False,
        output_dir: str | Path | None = None,
        time_column: str | None = None,
    ) -> None:
        self.time_limit = time_limit
        self.trials = trials
        self.folds = folds
        self.metric = metric
        self.space = space
        self.final = final
        self.seed = seed
        self.tracking = tracking
        self.output_dir = output_dir
        self.time_column = time_column

    def fit(self, X, y, groups=None):
        """Search on all of (X, y) with k-fold CV (no test split: evaluate on your own held-out data).

        `groups` (one label per row, as for scikit-learn's GroupKFold) keeps each group's rows in
        one fold and is not a feature; `time_column` (a column of X, which stays a feature) makes
        the folds forward-chaining: each fold model is scored on rows later than its training rows.
        """
        frame = _as_frame(X)
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        frame[TARGET_COLUMN] = np.asarray(y)
        if groups is not None:
            if len(groups) != len(frame):
                raise ValueError(f"groups has {len(groups)} labels for the {len(frame)} rows of X")
            if GROUPS_COLUMN in frame.columns:
                raise ValueError(f"X has a column named {GROUPS_COLUMN!r}: rename it to pass groups")
            frame[GROUPS_COLUMN] = np.asarray(groups)
        config = SearchConfig(
            target=TARGET_COLUMN,
            task=self._task_for(frame[TARGET_COLUMN]),
            metric=self.metric,
            test_size=0.0,
            folds=self.folds,
            trials=self.trials,
            time_limit=self.time_limit,
            space=self.space,
            final=self.final,
            seed=self.seed,
            tracking=self.tracking,
            output_dir=Path(self.output_dir) if self.output_dir else Path(tempfile.mkdtemp(prefix="autodl-")),
            group_column=None if groups is None else GROUPS_COLUMN,
            time_column=self.time_column,
        )
        self.result_ = run_search(config, frame, tracker=make_tracker(config))
        self.model_ = self.result_.model
        return self

    def _task_for(self, y: pd.Series) -> str | None:
        return self._task

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(_as_frame(X, self.feature_names_in_))


class AutoDLClassifier(ClassifierMixin, _AutoDLEstimator):
    """Classifier: searches baselines and Keras networks; `classes_` holds the labels."""

    def _task_for(self, y: pd.Series) -> str:
        return "binary" if y.nunique() == 2 else "multiclass"

    def fit(self, X, y):
        super().fit(X, y)
        self.classes_ = np.asarray(self.model_.classes)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(_as_frame(X, self.feature_names_in_))


class AutoDLRegressor(RegressorMixin, _AutoDLEstimator):
    """Regressor: searches baselines and Keras networks (the target is standardized for networks)."""

    _task = "regression"


def _as_frame(X, columns=None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.copy()
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {array.shape}")
    names = columns if columns is not None else [f"x{i}" for i in range(array.shape[1])]
    return pd.DataFrame(array, columns=list(names))
