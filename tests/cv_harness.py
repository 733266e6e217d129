"""Cross-validating one shipped baseline on a small table, as a search would."""

from __future__ import annotations

import pandas as pd

from autodl.candidates.base import Candidate
from autodl.candidates.baselines import baseline_candidates
from autodl.data.dataset import build_dataset
from autodl.metrics import resolve_metric
from autodl.split import make_folds
from autodl.tuning.cv import CVResult, DevData, cross_validate


def dev_data(frame: pd.DataFrame, target: str, task: str = "binary", folds: int = 3) -> DevData:
    """All of `frame` as development rows, with `folds` stratified folds."""
    dataset = build_dataset(frame, target=target, task=task, folds=folds, test_size=0.0)
    return DevData(
        dataset.features,
        dataset.y,
        make_folds(dataset.y, folds=folds, repeats=1, stratify=True, seed=0),
        dataset.profile,
        task,
        dataset.task.n_classes,
    )


def candidate_cv(candidate: Candidate, dev: DevData) -> CVResult:
    """`candidate`'s CV under the task's default metric."""
    return cross_validate(candidate, dev, resolve_metric(dev.task, None))


def baseline_cv(frame: pd.DataFrame, target: str, name: str, folds: int = 3) -> CVResult:
    """The `folds`-fold stratified CV (ROC AUC) of the baseline `name` on a binary `frame`."""
    dev = dev_data(frame, target, "binary", folds)
    return candidate_cv(next(c for c in baseline_candidates("binary", len(dev.y), 0) if c.name == name), dev)
