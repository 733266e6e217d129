"""Greedy ensemble selection over out-of-fold predictions."""

from __future__ import annotations

import numpy as np

from autodl.ensemble import select_ensemble
from autodl.metrics import Metric, resolve_metric


def noisy_views(y: np.ndarray, noise: list[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Class probabilities for a binary target, each candidate with its own independent noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, scale in enumerate(noise):
        p = 1 / (1 + np.exp(-(2.0 * y - 1.0 + rng.normal(0, scale, len(y)))))
        out[f"model_{i}"] = np.column_stack([1 - p, p])
    return out


def test_blends_independent_errors_and_leaves_out_a_useless_candidate():
    y = np.random.default_rng(1).integers(0, 2, 4000)
    oof = noisy_views(y, [1.0, 1.0])
    oof["constant"] = np.full((len(y), 2), 0.5)
    metric = resolve_metric("binary", None)
    weights = select_ensemble(oof, y, metric)
    assert set(weights) == {"model_0", "model_1"}
    assert abs(sum(weights.values()) - 1) < 1e-12
    blended = sum(w * oof[name] for name, w in weights.items())
    assert metric(y, blended) > max(metric(y, oof["model_0"]), metric(y, oof["model_1"]))


def test_on_many_rows_the_blends_are_scored_on_a_stratified_sample():
    rng = np.random.default_rng(2)
    y = (rng.random(30_000) < 0.02).astype(int)  # a rare class must still be in the sample
    oof = noisy_views(y, [0.8, 1.6, 3.0])
    roc_auc = resolve_metric("binary", None)
    seen: list[np.ndarray] = []

    def recorded(y_true, prediction):
        seen.append(y_true)
        return roc_auc(y_true, prediction)

    weights = select_ensemble(oof, y, Metric("roc_auc", True, recorded), max_rows=3_000, seed=0)
    assert seen and all(len(rows) <= 3_000 for rows in seen)
    assert all(0.01 < rows.mean() < 0.03 for rows in seen)  # the class shares kept
    assert max(weights, key=weights.get) == "model_0"  # the clearly best candidate leads
    assert select_ensemble(oof, y, roc_auc, max_rows=3_000, seed=0) == weights  # seeded: repeatable
