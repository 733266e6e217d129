"""The scikit-learn baselines every deep model must beat, fitted under the same folds."""

from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from autodl.candidates.base import Candidate
from autodl.candidates.packed_trees import (
    PackedExtraTreesClassifier,
    PackedExtraTreesRegressor,
    PackedHistGradientBoostingClassifier,
    PackedHistGradientBoostingRegressor,
    PackedRandomForestClassifier,
    PackedRandomForestRegressor,
)
from autodl.errors import ConfigError, did_you_mean
from autodl.preprocess import tree_categorical_mask

SVM_MAX_ROWS = 5000
LINEAR_FIRST_ROWS = 10_000
FOREST_FULL_ROWS = 20_000
FOREST_SAMPLE_ROWS = 50_000
FOREST_ONE_THREAD_ROWS = 1_000
# Up to this many rows the linear model picks its penalty by an inner CV on each training fold:
# 2-3x the cost of one penalty (10k rows of ~1,000 one-hot columns, 5 classes: 17 s against 6 s
# for 5 folds). Above it the rows outweigh the penalty (at 20k rows: 1.188 -> 1.162 log loss for
# 22 s against 10 s) and the time goes to the networks.
LINEAR_TUNED_ROWS = 10_000
LOGISTIC_CS = tuple(float(c) for c in np.logspace(-1.5, 2, 6))  # 0.03 .. 100
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))  # 0.01 .. 1000


HGB_TUNED = {
    "learning_rate": 0.04,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 15,
    "l2_regularization": 1.0,
    "max_iter": 600,
}
# Larger trees for tables with the rows to fill them; offered from DEEP_TREES_ROWS rows.
HGB_DEEP = {
    "learning_rate": 0.05,
    "max_leaf_nodes": 63,
    "min_samples_leaf": 10,
    "l2_regularization": 1.0,
    "max_iter": 600,
}
DEEP_TREES_ROWS = 5_000


def _hgb(classification: bool, seed: int, **params):
    # saved with the trees packed: the run store writes every fold model while the next one fits
    cls = PackedHistGradientBoostingClassifier if classification else PackedHistGradientBoostingRegressor

    def make(profile):
        mask = tree_categorical_mask(profile)
        return cls(categorical_features=mask if any(mask) else None, random_state=seed, **params)

    return make


def _linear(classification: bool, tuned: bool) -> Candidate:
    """Logistic regression or ridge; with `tuned`, its penalty chosen on each training fold.

    No single penalty suits all tables: 5-fold CV log loss with C=1 against C picked by a 3-fold
    inner CV: iris 0.177 -> 0.086, penguins 0.043 -> 0.010, heating 1.21 -> 1.14, bfi 1.49 ->
    1.37; lending_club's AUC 0.698 -> 0.739 (stronger penalty on its many one-hot columns). The
    inner CV scores log loss on every classification task: calibrated probabilities are what the
    ensemble blends. Ridge's alpha costs nothing extra (efficient leave-one-out).
    """
    if classification and tuned:
        params = {
            "model": "logistic_regression_cv",
            "Cs": [round(c, 3) for c in LOGISTIC_CS],
            "inner_folds": 3,
        }

        def make(profile):
            return LogisticRegressionCV(
                Cs=list(LOGISTIC_CS),
                cv=3,
                l1_ratios=(0.0,),
                scoring="neg_log_loss",
                tol=1e-3,  # 1e-4 took 4x as long on wide one-hot tables for the same scores
                max_iter=5000,
                use_legacy_attributes=False,
            )
    elif classification:
        params = {"model": "logistic_regression", "C": 1.0}

        def make(profile):
            return LogisticRegression(C=1.0, max_iter=2000)
    elif tuned:
        params = {"model": "ridge_cv", "alphas": [round(a, 3) for a in RIDGE_ALPHAS]}

        def make(profile):
            return RidgeCV(alphas=RIDGE_ALPHAS)
    else:
        params = {"model": "ridge", "alpha": 1.0}

        def make(profile):
            return Ridge(alpha=1.0)

    return Candidate("linear", "baseline", "dense", make, params)


def forest_settings(n_rows: int, n_jobs: int) -> dict:
    """Forests sized to the data: fewer trees, each on a subsample, once rows are many; one
    thread on small tables, where handing out trees costs more than a tree (5-fold CV of the
    two forests, 2 threads against 1: penguins 6.2 -> 4.1 s, titanic 7.3 -> 5.8 s; even at
    1,600 rows)."""
    return {
        "n_estimators": 300 if n_rows <= FOREST_FULL_ROWS else 100,
        "min_samples_leaf": 2,
        "max_samples": None if n_rows <= FOREST_FULL_ROWS else min(1.0, FOREST_SAMPLE_ROWS / n_rows),
        "n_jobs": 1 if n_rows <= FOREST_ONE_THREAD_ROWS else n_jobs,
    }


def baseline_candidates(
    task: str, n_rows: int, seed: int, n_jobs: int = -1, *, nonnegative_target: bool = False
) -> list[Candidate]:
    """All baselines that suit the task and the data size, in the order they run.

    On more than LINEAR_FIRST_ROWS rows HistGradientBoosting's defaults run first after the
    dummy: the strongest baseline per second on most tables, and the first model gets the most
    room from the time guard, so on data large for the budget it is the one that gets to finish
    (a linear model on a wide one-hot matrix can take as long). On fewer rows the linear model
    goes first: a second or two there (its inner CV included), and on a few dozen rows HGB's
    defaults (20 rows a leaf) cannot split at all. The rest follow roughly cheapest first.

    A regression target that is never negative (counts, prices, amounts) also gets the tuned
    gradient boosting with a Poisson loss (log link): multiplicative effects fit in fewer splits
    (5-fold CV RMSE of the tuned model: bikeshare -3%, statsmodels' grunfeld -34%, macrodata
    -15%, star98 -7%; up to +3% on tables with additive effects, where the squared-error models
    stay in the pool and the ensemble chooses between them).

    A multiclass target also gets extra trees grown to single-row leaves. Their class shares
    are the better probabilities on tables of continuous measurements (five folds' test log
    loss, the forest alone: wine_quality_red 0.805 -> 0.736, iris 0.108 -> 0.058, fishing 0.315
    -> 0.211, glass 0.704 -> 0.595) and far the worse on tables of few distinct values, where
    pure leaves give a class no share at all (catsup 0.84 -> 2.78, cracker 0.72 -> 2.14): one
    more candidate, and the ensemble selection keeps it where its out-of-fold scores earn it.

    Baselines run before any worker process starts, so forests use every core by default.
    """
    clf = task != "regression"
    forest = forest_settings(n_rows, n_jobs)
    candidates = [
        Candidate(
            "dummy",
            "baseline",
            "none",  # the prior or the mean: preprocessing would only cost time (2 min at 1M rows)
            lambda p: DummyClassifier(strategy="prior") if clf else DummyRegressor(strategy="mean"),
            {"strategy": "prior" if clf else "mean"},
        ),
        Candidate("hist_gradient_boosting", "baseline", "tree", _hgb(clf, seed), {"defaults": True}),
        _linear(clf, tuned=n_rows <= LINEAR_TUNED_ROWS),
        Candidate(
            "hist_gradient_boosting_tuned",
            "baseline",
            "tree",
            _hgb(clf, seed, **HGB_TUNED, early_stopping=True, n_iter_no_change=30),
            HGB_TUNED,
        ),
        Candidate(
            "random_forest",
            "baseline",
            "tree",
            lambda p: (PackedRandomForestClassifier if clf else PackedRandomForestRegressor)(
                max_features="sqrt" if clf else 0.5, **forest, random_state=seed
            ),
            {**forest, "max_features": "sqrt" if clf else 0.5},
        ),
        Candidate(
            "extra_trees",
            "baseline",
            "tree",
            lambda p: (PackedExtraTreesClassifier if clf else PackedExtraTreesRegressor)(
                max_features="sqrt" if clf else 0.7,
                bootstrap=forest["max_samples"] is not None,
                **forest,
                random_state=seed,
            ),
            {**forest, "max_features": "sqrt" if clf else 0.7},
        ),
    ]
    if n_rows <= LINEAR_FIRST_ROWS:
        candidates[1], candidates[2] = candidates[2], candidates[1]
    if n_rows > DEEP_TREES_ROWS:
        candidates.insert(
            4,
            Candidate(
                "hist_gradient_boosting_deep",
                "baseline",
                "tree",
                _hgb(clf, seed, **HGB_DEEP, early_stopping=True, n_iter_no_change=30),
                HGB_DEEP,
            ),
        )
    if task == "regression" and nonnegative_target:
        poisson = {**HGB_TUNED, "loss": "poisson"}
        candidates.insert(
            5 if n_rows > DEEP_TREES_ROWS else 4,
            Candidate(
                "hist_gradient_boosting_poisson",
                "baseline",
                "tree",
                _hgb(clf, seed, **poisson, early_stopping=True, n_iter_no_change=30),
                poisson,
            ),
        )
    if task == "multiclass" and n_rows <= FOREST_FULL_ROWS:
        grown = {**forest, "min_samples_leaf": 1}
        candidates.append(
            Candidate(
                "extra_trees_grown",
                "baseline",
                "tree",
                lambda p: PackedExtraTreesClassifier(max_features="sqrt", **grown, random_state=seed),
                {**grown, "max_features": "sqrt"},
            )
        )
    if n_rows <= SVM_MAX_ROWS:
        candidates.append(
            Candidate(
                "svm",
                "baseline",
                "dense",
                lambda p: (
                    # Platt-scaled probabilities (SVC(probability=True) is deprecated in scikit-learn 1.9)
                    CalibratedClassifierCV(SVC(C=1.0, random_state=seed), ensemble=False)
                    if clf
                    # an RBF kernel's epsilon and C assume a unit-scale target
                    else TransformedTargetRegressor(SVR(C=1.0), transformer=StandardScaler())
                ),
                {"kernel": "rbf", "C": 1.0},
            )
        )
    return candidates


# Baselines offered only on some data, and why (for the error when one is asked for elsewhere)
OFFERED_ONLY = {
    "svm": f"it is offered on up to {SVM_MAX_ROWS:,} rows",
    "hist_gradient_boosting_poisson": "it is offered only for regression targets that are never negative",
    "hist_gradient_boosting_deep": f"it is offered on more than {DEEP_TREES_ROWS:,} rows",
    "extra_trees_grown": f"it is offered for multiclass targets on up to {FOREST_FULL_ROWS:,} rows",
}


def select_baselines(candidates: list[Candidate], names: tuple[str, ...] | None) -> list[Candidate]:
    """Keep the named baselines (all when `names` is None); ConfigError for an unknown name, or
    for one this data does not get."""
    if names is None:
        return candidates
    known = [c.name for c in candidates]
    for name in names:
        if name in OFFERED_ONLY and name not in known:
            raise ConfigError(
                f"baseline {name!r} does not suit this data: {OFFERED_ONLY[name]}",
                f"choose from {', '.join(known)}, or pass --baselines none",
            )
        if name not in known:
            raise ConfigError(
                f"unknown baseline {name!r}{did_you_mean(name, known)}",
                f"choose from {', '.join(known)}, or pass --baselines none",
            )
    return [c for c in candidates if c.name in names]
