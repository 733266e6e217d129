"""The honest split: a test set set aside first, then k-fold CV on the rest.

By default rows are shuffled (stratified by class for classification). Two other schemes on
request: rows of one group (a person, a store, a patient) stay together, in the test part or
in one fold's held-out rows, so the scores are those of new groups; or rows are ordered by
time, the test part is the latest rows and each fold is scored on rows later than all of its
training rows, so the scores are those of a forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from autodl.errors import DataError


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


def holdout_split(
    y: np.ndarray,
    *,
    test_size: float,
    stratify: bool,
    seed: int,
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> Holdout:
    """Set aside `test_size` of the rows: at random (stratified by class for classification),
    whole `groups`, or the latest rows by `times` (rows of the boundary's time all in the test)."""
    rows = np.arange(len(y))
    if test_size == 0:
        return Holdout(rows, rows[:0])
    if times is not None:
        boundary = np.sort(times)[len(times) - math.ceil(test_size * len(times))]
        if not np.any(times < boundary):  # the boundary's time is the earliest: ties fill the test
            raise DataError(
                f"no rows come before the latest {test_size:.0%}: the rows of their earliest time "
                "are the earliest rows of the table",
                "lower --test-size, or pass a --time-column with more distinct times",
            )
        return Holdout(rows[times < boundary], rows[times >= boundary])
    if groups is not None:
        if stratify:
            # StratifiedGroupKFold keeps class shares as groups allow; its first fold is the test part
            splitter = StratifiedGroupKFold(
                n_splits=max(2, round(1 / test_size)), shuffle=True, random_state=seed
            )
        else:
            splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        dev, test = next(splitter.split(rows, y, groups))
        return Holdout(np.sort(dev), np.sort(test))
    dev, test = train_test_split(
        rows, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    return Holdout(np.sort(dev), np.sort(test))


def make_folds(
    y: np.ndarray,
    *,
    folds: int,
    repeats: int,
    stratify: bool,
    seed: int,
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> list[Fold]:
    """k-fold (stratified for classification), repeated `repeats` times with reshuffling; with
    `groups`, each group's rows in one fold; with `times`, forward-chaining folds (below)."""
    if times is not None:
        return _forward_chaining(times, folds)
    placeholder = np.zeros((len(y), 1))
    if groups is not None:
        found = []
        for repeat in range(repeats):
            splitter_cls = StratifiedGroupKFold if stratify else GroupKFold
            splitter = splitter_cls(n_splits=folds, shuffle=True, random_state=seed + repeat)
            found += [(repeat, split) for split in splitter.split(placeholder, y, groups)]
        return [
            Fold(index=i, repeat=repeat, train=np.sort(train), valid=np.sort(valid))
            for i, (repeat, (train, valid)) in enumerate(found)
        ]
    if repeats > 1:
        splitter_cls = RepeatedStratifiedKFold if stratify else RepeatedKFold
        splitter = splitter_cls(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        splitter_cls = StratifiedKFold if stratify else KFold
        splitter = splitter_cls(n_splits=folds, shuffle=True, random_state=seed)
    return [
        Fold(index=i, repeat=i // folds, train=train, valid=valid)
        for i, (train, valid) in enumerate(splitter.split(placeholder, y if stratify else None))
    ]


def _forward_chaining(times: np.ndarray, folds: int) -> list[Fold]:
    """The rows in time order, cut into `folds` + 1 blocks: fold i trains on blocks 0..i and is
    scored on block i + 1 (scikit-learn's TimeSeriesSplit, with rows of equal time kept in one
    block). The first block is never held out, so it has no out-of-fold prediction."""
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    cuts = [
        int(np.searchsorted(ordered, ordered[round(len(times) * j / (folds + 1))], side="left"))
        for j in range(1, folds + 1)
    ]
    bounds = [*cuts, len(times)]
    if len(set(bounds)) < len(bounds) or bounds[0] == 0:
        raise DataError(
            f"the time column has too few distinct times ({len(np.unique(times))}) for {folds} time-ordered folds",
            "lower --folds, or order the rows by a finer time column",
        )
    return [
        Fold(
            index=i,
            repeat=0,
            train=np.sort(order[: bounds[i]]),
            valid=np.sort(order[bounds[i] : bounds[i + 1]]),
        )
        for i in range(folds)
    ]


def check_split_classes(y: np.ndarray, holdout: Holdout, folds: list[Fold], scheme: str) -> None:
    """DataError when a grouped or time-ordered split leaves the test rows or a fold with one
    class: a model could not learn from them, or their score (ROC AUC) would be undefined.
    Shuffled splits are stratified instead."""
    if len(holdout.test) and len(np.unique(y[holdout.test])) < 2:
        raise DataError(
            f"the test rows of the {scheme} split hold one class only",
            "raise --test-size, or leave out the grouping or time order if the classes allow no other split",
        )
    y = y[holdout.dev]
    for fold in folds:
        for part, rows in (("trains on", fold.train), ("holds out", fold.valid)):
            if len(np.unique(y[rows])) < 2:
                raise DataError(
                    f"fold {fold.index + 1} of the {scheme} folds {part} rows of one class only",
                    "lower --folds, or leave out the grouping or time order if the classes allow no other split",
                )


def held_out_rows(folds: list[Fold]) -> np.ndarray:
    """The development rows some fold holds out: all of them, except the first block of
    time-ordered folds. Out-of-fold predictions exist for these rows only."""
    return np.unique(np.concatenate([fold.valid for fold in folds]))
