"""Greedy ensemble selection (Caruana et al. 2004) over out-of-fold predictions."""

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


def select_ensemble(
    oof: dict[str, np.ndarray],
    y: np.ndarray,
    metric: Metric,
    rounds: int = ROUNDS,
    max_rows: int = SELECTION_ROWS,
    seed: int = 0,
) -> dict[str, float]:
    """Weights (summing to 1) of the candidates whose averaged OOF predictions score best.

    Starts from the best single candidate and adds, with replacement, whichever candidate most
    improves the blend; stops when no addition improves it. With more than `max_rows` rows the
    blends are scored on a random sample of `max_rows` of them (stratified by class when the
    predictions are class probabilities).
    """
    rows = sample_rows(y, max_rows, stratify=next(iter(oof.values())).ndim == 2, seed=seed)
    if rows is not None:
        oof, y = {name: values[rows] for name, values in oof.items()}, y[rows]
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


def selection_seconds(
    oof: dict[str, np.ndarray],
    y: np.ndarray,
    metric: Metric,
    rounds: int = ROUNDS,
    max_rows: int = SELECTION_ROWS,
) -> float:
    """About how long `select_ensemble` can take on these predictions at most: `rounds` rounds,
    each scoring a blend with every candidate, at the measured cost of one score."""
    if len(oof) < 2:
        return 0.0
    rows = min(len(y), max_rows)
    sample, truth = next(iter(oof.values()))[:rows], y[:rows]
    timings = []
    for _ in range(3):  # the quickest of three: the first call may pay for cold caches
        started = time.perf_counter()
        metric(truth, sample)
        timings.append(time.perf_counter() - started)
    return rounds * len(oof) * min(timings)


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
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = min(len(members), max(1, round(len(members) * size / len(y))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))
