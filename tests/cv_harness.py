"""Cross-validating one shipped baseline on a small binary table, as a search would."""

from __future__ import annotations

import pandas as pd

from autodl.candidates.baselines import baseline_candidates
from autodl.data.dataset import build_dataset
from autodl.metrics import resolve_metric
from autodl.split import make_folds
from autodl.tuning.cv import CVResult, DevData, cross_validate


def baseline_cv(frame: pd.DataFrame, target: str, name: str, folds: int = 3) -> CVResult:
    """The `folds`-fold stratified CV (ROC AUC) of the baseline `name` on `frame`."""
    dataset = build_dataset(frame, target=target, task="binary", folds=folds, test_size=0.0)
    dev = DevData(
        dataset.features,
        dataset.y,
        make_folds(dataset.y, folds=folds, repeats=1, stratify=True, seed=0),
        dataset.profile,
        "binary",
        2,
    )
    candidate = next(c for c in baseline_candidates("binary", len(dev.y), 0) if c.name == name)
    return cross_validate(candidate, dev, resolve_metric("binary", None))
