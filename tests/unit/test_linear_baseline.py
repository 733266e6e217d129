"""The linear baseline fits its penalty to the table instead of one C for every table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV

from autodl.candidates.base import Candidate
from autodl.candidates.baselines import LINEAR_TUNED_ROWS, baseline_candidates
from tests.cv_harness import candidate_cv, dev_data


def _linear(task: str, n_rows: int) -> Candidate:
    return next(c for c in baseline_candidates(task, n_rows, 0) if c.name == "linear")


def test_linear_baseline_beats_a_fixed_penalty_on_well_separated_classes():
    # three well-separated clusters: C=1 shrinks the probabilities towards the prior, which
    # log loss punishes; a weaker penalty chosen on the training folds gives sharper ones
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    labels = rng.integers(0, 3, 150)
    points = centers[labels] + rng.normal(size=(150, 2))
    frame = pd.DataFrame({"a": points[:, 0], "b": points[:, 1], "kind": np.array(["x", "y", "z"])[labels]})
    dev = dev_data(frame, "kind", "multiclass", folds=5)

    tuned = candidate_cv(_linear("multiclass", len(frame)), dev)
    fixed = candidate_cv(
        Candidate("c1", "baseline", "dense", lambda p: LogisticRegression(C=1.0, max_iter=2000), {}), dev
    )

    assert tuned.mean < 0.9 * fixed.mean
    assert {m[-1].C_ for m in tuned.models} != {1.0}


def test_linear_baseline_keeps_one_penalty_on_large_tables():
    # an inner CV on every fold of a large table would cost minutes for a penalty its rows outweigh
    for task, tuned, fixed in [
        ("binary", LogisticRegressionCV, LogisticRegression),
        ("regression", RidgeCV, Ridge),
    ]:
        assert isinstance(_linear(task, LINEAR_TUNED_ROWS).make_estimator(None), tuned)
        assert type(_linear(task, LINEAR_TUNED_ROWS + 1).make_estimator(None)) is fixed
