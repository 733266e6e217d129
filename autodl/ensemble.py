"""Greedy ensemble selection (Caruana et al. 2004) over out-of-fold predictions, repeated on
bootstrap resamples of the rows where the rows are few."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from autodl.metrics import Metric

ROUNDS = 25
MIN_GAIN = 1e-5  # smaller gains are float noise (a constant member can nudge tied ranks)
# Past this many rows the weights are chosen on a sample: one ROC AUC of 750k rows takes ~0.4 s
# and the greedy rounds ask for up to 25 per candidate (30+ s past the time limit at 1M rows).
SELECTION_ROWS = 100_000
# On few rows a candidate can lead by luck on a handful of them (penguins at 300 s: the best of
# 105 trials by CV, 0.013 log loss, was given the whole blend and was the worst of the eight kept
# on test). Up to this many rows the selection is repeated on RESAMPLES bootstrap resamples and
# the weights averaged: a candidate that is truly best wins most resamples and keeps its weight.
RESAMPLED_ROWS = 5_000
RESAMPLES = 20
# Rounds of each resample's selection: averaged over the resamples, 10 rounds give weights as
# fine as 25 (on 23 benchmark stores the blends scored within 0.03%), at 2.3x less worst case.
RESAMPLE_ROUNDS = 10
MIN_WEIGHT = 0.05  # lighter members barely move the blend and each adds its fold models
MAX_MEMBERS = 8  # the heaviest: the final stage's time is set aside for scoring this many


def select_ensemble(
    oof: dict[str, np.ndarray],
    y: np.ndarray,
    metric: Metric,
    rounds: int = ROUNDS,
    max_rows: int = SELECTION_ROWS,
    seed: int = 0,
    *,
    resamples: int = RESAMPLES,
    keep_alone: str | None = None,
    clusters: np.ndarray | None = None,
) -> dict[str, float]:
    """Weights (summing to 1) of the candidates whose averaged OOF predictions score best.

    Starts from the best single candidate and adds, with replacement, whichever candidate most
    improves the blend; stops when no addition improves it. With more than `max_rows` rows the
    blends are scored on a random sample of `max_rows` of them (stratified by class when the
    predictions are class probabilities). On up to RESAMPLED_ROWS rows the selection runs on
    `resamples` bootstrap resamples of the rows (within each class) instead, the weights are
    averaged and members under MIN_WEIGHT dropped; unless the selection on all rows keeps only
    `keep_alone` (the dummy reference: no model beat it), which then stays alone. At most
    MAX_MEMBERS members are kept, the heaviest.

    `clusters` (one label per row) makes the resamples draw whole clusters with replacement:
    the groups of a grouped search, or blocks of consecutive rows of a time-ordered one, whose
    rows are not independent draws. A resample that misses a class is drawn again.
    """
    stratify = next(iter(oof.values())).ndim == 2
    rows = sample_rows(y, max_rows, stratify=stratify, seed=seed)
    if rows is not None:
        oof, y = {name: values[rows] for name, values in oof.items()}, y[rows]
        clusters = None if clusters is None else clusters[rows]
    weights = Counter(_greedy(oof, y, metric, rounds))
    if not resamples or len(y) > RESAMPLED_ROWS or set(weights) == {keep_alone}:
        return _normalized(dict(weights.most_common(MAX_MEMBERS)))
    draw = _Resampler(y, stratify, clusters, np.random.default_rng(seed))
    averaged, drawn = Counter(), 0
    for _ in range(resamples):
        rows = draw()
        if rows is None:
            continue
        drawn += 1
        resample = {name: values[rows] for name, values in oof.items()}
        averaged.update(_greedy(resample, y[rows], metric, min(rounds, RESAMPLE_ROUNDS)))
    if not drawn:  # no resample held every class: too few clusters to resample
        return _normalized(dict(weights.most_common(MAX_MEMBERS)))
    kept = {name: w / drawn for name, w in averaged.most_common(MAX_MEMBERS) if w / drawn >= MIN_WEIGHT}
    return _normalized(kept or dict(averaged.most_common(1)))


def keep_heaviest(weights: dict[str, float], among: set[str], most: int) -> dict[str, float]:
    """`weights` with at most `most` of the members named in `among` (the heaviest), renormalized."""
    lighter = sorted((name for name in weights if name in among), key=weights.get, reverse=True)[most:]
    return _normalized({name: weight for name, weight in weights.items() if name not in lighter})


def _normalized(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {name: weight / total for name, weight in sorted(weights.items(), key=lambda item: -item[1])}


def _greedy(oof: dict[str, np.ndarray], y: np.ndarray, metric: Metric, rounds: int) -> dict[str, float]:
    names = list(oof)
    scores = {name: metric(y, oof[name]) for name in names}
    best_single = max(names, key=lambda n: scores[n] if metric.greater_is_better else -scores[n])
    chosen = Counter({best_single: 1})
    blend_sum = oof[best_single].copy()
    current = scores[best_single]
    for _ in range(rounds - 1):
        size = sum(chosen.values()) + 1
        trial_scores = {name: metric(y, (blend_sum + oof[name]) / size) for name in names}
        name = max(names, key=lambda n: trial_scores[n] if metric.greater_is_better else -trial_scores[n])
        gain = trial_scores[name] - current if metric.greater_is_better else current - trial_scores[name]
        if gain <= MIN_GAIN:
            break
        chosen[name] += 1
        blend_sum += oof[name]
        current = trial_scores[name]
    total = sum(chosen.values())
    return {name: count / total for name, count in chosen.most_common()}


class _Resampler:
    """Draws bootstrap resamples of the rows: whole clusters when given, else rows (within each
    class when stratified)."""

    TRIES = 10  # draws of clusters until one holds every class

    def __init__(
        self, y: np.ndarray, stratify: bool, clusters: np.ndarray | None, rng: np.random.Generator
    ) -> None:
        self.y, self.rng = y, rng
        self.class_rows = _class_members(y) if stratify else None
        if clusters is None:
            self.members = None
        else:
            order = np.argsort(clusters, kind="stable")
            starts = np.flatnonzero(np.r_[True, clusters[order][1:] != clusters[order][:-1]])
            self.members = np.split(order, starts[1:])

    def __call__(self) -> np.ndarray | None:
        """Row indices of one resample; None when no draw of clusters held every class."""
        if self.members is None:
            if self.class_rows is None:
                return self.rng.integers(0, len(self.y), len(self.y))
            return np.concatenate([self.rng.choice(rows, size=len(rows)) for rows in self.class_rows])
        for _ in range(self.TRIES):
            picked = self.rng.integers(0, len(self.members), len(self.members))
            rows = np.concatenate([self.members[i] for i in picked])
            if self.class_rows is None or len(np.unique(self.y[rows])) == len(self.class_rows):
                return rows
        return None


def _class_members(y: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(y == label) for label in np.unique(y)]


def selection_seconds(
    oof: dict[str, np.ndarray],
    y: np.ndarray,
    metric: Metric,
    rounds: int = ROUNDS,
    max_rows: int = SELECTION_ROWS,
    resamples: int = RESAMPLES,
) -> float:
    """About how long `select_ensemble` can take on these predictions at most: `rounds` rounds,
    each scoring a blend with every candidate, at the measured cost of one score; and
    RESAMPLE_ROUNDS more for each resample on up to RESAMPLED_ROWS rows."""
    if len(oof) < 2:
        return 0.0
    rows = min(len(y), max_rows)
    resampled = resamples * min(rounds, RESAMPLE_ROUNDS) if rows <= RESAMPLED_ROWS else 0
    sample, truth = next(iter(oof.values()))[:rows], y[:rows]
    timings = []
    for _ in range(3):  # the quickest of three: the first call may pay for cold caches
        started = time.perf_counter()
        metric(truth, sample)
        timings.append(time.perf_counter() - started)
    return (rounds + resampled) * len(oof) * min(timings)


def blend(predictions: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted average of the members' predictions."""
    return sum(weights[name] * predictions[name] for name in weights)


def sample_rows(y: np.ndarray, size: int, *, stratify: bool, seed: int) -> np.ndarray | None:
    """Sorted indices of `size` random rows (each class in its share, at least one row per
    class, when stratified); None when there are no more than `size` rows.

    Not `train_test_split(stratify=...)`: it refuses a class of one row and may drop a rare one.
    """
    if len(y) <= size:
        return None
    rng = np.random.default_rng(seed)
    if not stratify:
        return np.sort(rng.choice(len(y), size=size, replace=False))
    picked = []
    for members in _class_members(y):
        take = min(len(members), max(1, round(len(members) * size / len(y))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))
