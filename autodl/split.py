"""The honest split: a test set set aside first, then k-fold CV on the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import (
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    train_test_split,
)


@dataclass(frozen=True)
class Holdout:
    """Row indices of the development part (search) and the test part (scored once, at the end)."""

    dev: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Fold:
    """One CV fold over the development rows: positions into the dev part."""

    index: int
    repeat: int
    train: np.ndarray
    valid: np.ndarray


def holdout_split(y: np.ndarray, *, test_size: float, stratify: bool, seed: int) -> Holdout:
    """Set aside `test_size` of the rows (stratified by class for classification)."""
    rows = np.arange(len(y))
    if test_size == 0:
        return Holdout(rows, rows[:0])
    dev, test = train_test_split(
        rows, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    return Holdout(np.sort(dev), np.sort(test))


def make_folds(y: np.ndarray, *, folds: int, repeats: int, stratify: bool, seed: int) -> list[Fold]:
    """k-fold (stratified for classification), repeated `repeats` times with reshuffling."""
    if repeats > 1:
        splitter_cls = RepeatedStratifiedKFold if stratify else RepeatedKFold
        splitter = splitter_cls(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        splitter_cls = StratifiedKFold if stratify else KFold
        splitter = splitter_cls(n_splits=folds, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(y), 1))
    return [
        Fold(index=i, repeat=i // folds, train=train, valid=valid)
        for i, (train, valid) in enumerate(splitter.split(placeholder, y if stratify else None))
    ]
