"""The leakage guard: on a target that is pure noise, no candidate may cross-validate above chance.

Any information flowing from the held-out rows of a fold into its model (preprocessing fitted on
all rows, early stopping on held-out rows, towers sharing rows, target statistics) shows up as a
CV ROC AUC above 0.5. The negative control proves the guard has teeth: a classic leak (a target
encoder fitted on every row, held-out folds included) clearly fails it on the same data and folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autodl.api import search
from autodl.candidates.base import Candidate
from autodl.data.dataset import build_dataset
from autodl.data.profile import profile_columns
from autodl.metrics import resolve_metric
from autodl.split import holdout_split, make_folds
from autodl.tuning.cv import DevData, cross_validate

N_ROWS = 3000
FOLDS = 3
SEED = 0
CHANCE = 0.5
TOLERANCE = 0.06


def noise_table(n: int = N_ROWS, seed: int = 7) -> pd.DataFrame:
    """Numbers, categories (one with ~600 levels) and missing values; a target independent of all."""
    rng = np.random.default_rng(seed)

    def with_gaps(values, share):
        values = pd.Series(values)
        values[rng.random(n) < share] = np.nan
        return values

    frame = pd.DataFrame(
        {
            "num_normal": rng.normal(size=n).round(4),
            "num_skewed": with_gaps(rng.lognormal(3.0, 1.0, size=n).round(2), 0.15),
            "num_count": rng.poisson(3, size=n),
            "cat_small": with_gaps(rng.choice(["red", "green", "blue", "grey"], size=n), 0.10),
            "cat_high": with_gaps(np.char.add("h", rng.integers(0, 600, size=n).astype(str)), 0.05),
        }
    )
    frame["target"] = rng.integers(0, 2, size=n)
    return frame


@pytest.fixture(scope="module")
def noise() -> pd.DataFrame:
    return noise_table()


def dev_data(frame: pd.DataFrame) -> DevData:
    """The development rows and CV folds exactly as run_search builds them (same seed)."""
    dataset = build_dataset(frame, target="target", folds=FOLDS, test_size=0.2)
    holdout = holdout_split(dataset.y, test_size=0.2, stratify=True, seed=SEED)
    y = dataset.y[holdout.dev]
    folds = make_folds(y, folds=FOLDS, repeats=1, stratify=True, seed=SEED)
    features = dataset.features.iloc[holdout.dev].reset_index(drop=True)
    return DevData(features, y, folds, dataset.profile, dataset.task.kind, dataset.task.n_classes)


def test_no_candidate_beats_chance_on_a_random_target(noise, tmp_path):
    profile = profile_columns(noise.drop(columns=["target"]))
    kinds = {c.name: c.kind for c in profile.columns}
    assert kinds["cat_high"] == "categorical" and kinds["cat_small"] == "categorical"
    assert kinds["num_skewed"] == "numeric"

    result = search(
        noise,
        target="target",
        trials=2,
        folds=FOLDS,
        space="mlp_small",
        max_epochs=3,
        time_limit=600,
        tracking=False,
        seed=SEED,
        output_dir=tmp_path / "noise",
    )
    assert result.task == "binary" and result.metric == "roc_auc"
    complete = [o for o in result.outcomes if o.state == "complete"]
    names = {o.name for o in complete}
    assert "dummy" in names and any(n.startswith("keras_trial_") for n in names), names
    report = {o.name: round(o.mean, 4) for o in complete}
    print("CV roc_auc on noise:", report, "ensemble:", round(result.cv_score, 4), result.test_scores)
    for outcome in complete:
        assert len(outcome.fold_scores) == FOLDS
        assert abs(outcome.mean - CHANCE) <= TOLERANCE, report
    assert abs(result.cv_score - CHANCE) <= TOLERANCE, (result.cv_score, report)
    assert abs(result.test_scores["roc_auc"] - CHANCE) <= 0.1, result.test_scores


def target_encoder():
    """scikit-learn's TargetEncoder with fixed, seeded internal cross-fitting."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import TargetEncoder

    return TargetEncoder(target_type="binary", cv=StratifiedKFold(5, shuffle=True, random_state=SEED))


def logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def test_guard_catches_a_target_encoder_fitted_on_all_rows(noise):
    """Negative control: the same noise, the same folds, one leaky feature -> well above chance."""
    data = dev_data(noise)
    metric = resolve_metric("binary", None)
    assert sum(len(f.valid) for f in data.folds) == len(data.y)

    # The mistake: encode the high-cardinality column with target means of ALL development rows
    # (fit on everything, then transform), so each held-out row's own label is in its feature.
    categories = data.features[["cat_high"]].astype(object).fillna("__missing__")
    leaked = target_encoder().fit(categories, data.y).transform(categories)[:, 0]
    leaky = pd.DataFrame({"cat_high_target_mean": leaked})
    leaky_data = DevData(leaky, data.y, data.folds, profile_columns(leaky), data.task, data.n_classes)
    candidate = Candidate("leaky_target_encoding", "baseline", "dense", lambda p: logistic(), {})
    cv = cross_validate(candidate, leaky_data, metric)
    assert cv.mean > CHANCE + TOLERANCE, cv.fold_scores
    assert all(score > CHANCE for score in cv.fold_scores), cv.fold_scores


def test_the_same_encoder_fitted_inside_each_fold_passes_the_guard(noise):
    """The contrast: target encoding learned on each fold's training rows only stays at chance."""
    from sklearn.pipeline import make_pipeline

    data = dev_data(noise)
    metric = resolve_metric("binary", None)
    honest = Candidate(
        "honest_target_encoding",
        "baseline",
        "tree",
        lambda p: make_pipeline(target_encoder(), logistic()),
        {},
    )
    only_high = data.features[["cat_high"]]
    honest_data = DevData(
        only_high, data.y, data.folds, profile_columns(only_high), data.task, data.n_classes
    )
    cv = cross_validate(honest, honest_data, metric)
    assert abs(cv.mean - CHANCE) <= TOLERANCE, cv.fold_scores
