"""Greedy ensemble selection over out-of-fold predictions."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from autodl.ensemble import MAX_MEMBERS, MIN_WEIGHT, keep_heaviest, select_ensemble, selection_seconds
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


def near_copies(rows: int, copies: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A binary target and candidates that differ from one shared model by a little noise each:
    equally good in truth, so which one scores best out of fold is luck."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    shared = 2.0 * y - 1 + rng.normal(0, 1.5, rows)
    views = {}
    for i in range(copies):
        p = 1 / (1 + np.exp(-2 * (shared + rng.normal(0, 0.1, rows))))
        views[f"copy_{i}"] = np.column_stack([1 - p, p])
    return y, views


def test_on_few_rows_candidates_equal_within_noise_share_the_weight():
    """The winner's curse: on 200 rows the greedy selection on all rows gives two thirds of the
    blend to whichever copy leads by luck; repeated on bootstrap resamples, the lead is shared."""
    y, oof = near_copies(200, copies=6)
    log_loss = resolve_metric("multiclass", "log_loss")

    on_all_rows = select_ensemble(oof, y, log_loss, resamples=0)
    resampled = select_ensemble(oof, y, log_loss)

    assert max(on_all_rows.values()) > 0.6
    assert max(resampled.values()) < 0.4 and len(resampled) > len(on_all_rows)
    assert min(resampled.values()) >= MIN_WEIGHT and sum(resampled.values()) == pytest.approx(1)
    assert select_ensemble(oof, y, log_loss) == resampled  # seeded: repeatable


def test_a_blend_keeps_at_most_the_heaviest_members():
    y = np.random.default_rng(3).integers(0, 2, 300)
    oof = noisy_views(y, [2.0] * 20)  # independent errors: every candidate helps a little
    weights = select_ensemble(oof, y, resolve_metric("binary", None))
    assert len(weights) <= MAX_MEMBERS and sum(weights.values()) == pytest.approx(1)

    fewer = keep_heaviest(weights, among=set(list(weights)[1:]), most=2)
    assert list(fewer) == list(weights)[:3]  # the first (not among them) and the two heaviest others
    assert sum(fewer.values()) == pytest.approx(1)


def test_the_prior_alone_stays_alone_when_nothing_beats_it():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    prior = np.full((300, 2), 0.5)
    unrelated = rng.dirichlet([1, 1], 300)  # confident and wrong half the time
    oof = {"dummy": prior, "noise": unrelated}
    assert select_ensemble(oof, y, resolve_metric("multiclass", "log_loss"), keep_alone="dummy") == {
        "dummy": 1.0
    }


def test_when_no_model_beats_the_prior_the_final_model_is_the_dummy_and_says_so(tmp_path):
    from autodl import search

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 6)), columns=list("abcdef"))
    frame["y"] = rng.choice(["a", "b", "c"], size=200)  # unrelated to the features
    result = search(
        frame,
        target="y",
        trials=0,
        folds=2,
        baselines=("dummy", "linear"),
        tracking=False,
        output_dir=tmp_path / "run",
    )
    linear = next(o for o in result.outcomes if o.name == "linear")
    dummy = next(o for o in result.outcomes if o.name == "dummy")
    assert linear.mean > dummy.mean  # log loss: the linear model is worse than the class shares
    assert result.final_members == {"dummy": 1.0}
    assert "no model beat the dummy reference" in result.decisions["warning"]


def test_the_pool_offers_the_dummy_to_the_blend_but_it_is_no_model(tmp_path):
    from autodl.pool import CandidatePool
    from autodl.store import RunStore
    from autodl.tuning.cv import CVResult

    pool = CandidatePool(resolve_metric("multiclass", None), RunStore(tmp_path))
    pool.add("dummy", "baseline", CVResult([0.69], np.full((10, 2), 0.5), [], 0.1), persist=False)
    assert "dummy" in pool.oof and not pool.has_model
    pool.add("linear", "baseline", CVResult([0.5], np.full((10, 2), 0.5), [], 0.1), persist=False)
    assert pool.has_model


@pytest.mark.parametrize(("metric", "offered"), [("roc_auc", False), ("log_loss", True)])
def test_the_dummy_is_offered_to_the_blend_only_under_a_metric_that_scores_values(metric, offered, tmp_path):
    # Under ROC AUC its per-fold priors would only shift whole folds against each other in the
    # pooled out-of-fold scores, a gain that cannot carry over to new rows.
    from autodl.pool import CandidatePool
    from autodl.store import RunStore
    from autodl.tuning.cv import CVResult

    pool = CandidatePool(resolve_metric("binary", metric), RunStore(tmp_path))
    for name in ("dummy", "linear"):
        pool.add(name, "baseline", CVResult([0.6], np.full((10, 2), 0.5), [], 0.1), persist=False)
    assert ("dummy" in pool.blendable()) is offered and "linear" in pool.blendable()


def test_the_time_set_aside_for_the_selection_covers_every_round_over_every_candidate():
    """The search ends its Keras stage early enough for the selection's worst case: each of
    the rounds scores a blend with every candidate (33 candidates took ~3 s at 6k rows)."""

    def slow_auc(y, proba):
        time.sleep(0.002)
        return float(np.mean(proba[:, 1][y == 1]) - np.mean(proba[:, 1][y == 0]))

    metric = Metric("slow", True, slow_auc)
    y = np.random.default_rng(0).integers(0, 2, 300)
    oof = noisy_views(y, [1.0, 1.5, 2.0, 3.0])
    assert selection_seconds(oof, y, metric, rounds=5) >= 5 * len(oof) * 0.002
    assert selection_seconds({"model_0": oof["model_0"]}, y, metric) == 0.0  # nothing to choose


def _leads_on_one_group(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """10 groups of 20 rows. "one_group" is exact on group 0 and slightly worse than "steady"
    everywhere else (the same errors, scaled by 1.1); over all rows "one_group" is better, by
    group 0 alone."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(10), 20)
    y = rng.normal(size=200)
    errors = rng.normal(0, 0.5, 200)
    errors[groups == 0] = rng.normal(0, 1.0, 20)
    one_group = np.where(groups == 0, y, y + 1.1 * errors)
    return y, {"steady": y + errors, "one_group": one_group}, groups


def test_a_grouped_resample_draws_whole_groups_so_a_lead_on_one_group_is_not_trusted():
    y, oof, groups = _leads_on_one_group()
    metric = resolve_metric("regression", None)
    assert metric(y, oof["one_group"]) < metric(y, oof["steady"])  # better on all rows
    by_rows = select_ensemble(oof, y, metric)
    by_groups = select_ensemble(oof, y, metric, clusters=groups)
    # Row resamples all hold ~20 rows of group 0, so "one_group" leads them all; about a third
    # of the group resamples lack group 0, and "steady" leads those.
    assert by_groups["steady"] > by_rows.get("steady", 0.0) + 0.1


def test_a_grouped_resample_that_misses_a_class_is_drawn_again():
    groups = np.repeat(np.arange(10), 20)
    y = (groups == 0).astype(int)  # the positive class lives in one group
    oof = noisy_views(y, [1.0, 1.2])
    weights = select_ensemble(oof, y, resolve_metric("binary", None), clusters=groups)
    assert weights and abs(sum(weights.values()) - 1) < 1e-12
