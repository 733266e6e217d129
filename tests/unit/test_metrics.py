"""The metrics computed directly give scikit-learn's numbers, and its errors on bad input."""

import numpy as np
import pytest
from sklearn import metrics as skm

from autodl.metrics import resolve_metric

RNG = np.random.default_rng(0)


def _proba(rows: int, classes: int) -> np.ndarray:
    # each row ten times, so that many scores tie (ROC AUC counts a tie as one half)
    return np.repeat(RNG.dirichlet(np.ones(classes), rows // 10), 10, axis=0)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_roc_auc_and_log_loss_match_scikit_learn(classes):
    y = RNG.integers(0, classes, 400)
    proba = _proba(400, classes)
    proba[:3, 0], proba[:3, 1:] = 0.0, 1.0 / (classes - 1)  # a zero probability is clipped
    labels = np.arange(classes)

    auc = resolve_metric("binary" if classes == 2 else "multiclass", "roc_auc")(y, proba)
    log_loss = resolve_metric("multiclass", "log_loss")(y, proba)

    expected_auc = (
        skm.roc_auc_score(y, proba[:, 1])
        if classes == 2
        else skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels)
    )
    assert auc == pytest.approx(expected_auc, abs=1e-12)
    assert log_loss == pytest.approx(skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels), abs=1e-12)


def test_rmse_matches_scikit_learn():
    y, values = RNG.normal(size=300), RNG.normal(size=300)
    assert resolve_metric("regression", "rmse")(y, values) == pytest.approx(
        skm.root_mean_squared_error(y, values), abs=1e-12
    )


def test_a_class_absent_from_the_rows_is_scored_as_scikit_learn_scores_it():
    y = RNG.integers(0, 2, 100)  # class 2 of 3 never occurs, as in a small validation fold
    proba = _proba(100, 3)
    assert resolve_metric("multiclass", "log_loss")(y, proba) == pytest.approx(
        skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=[0, 1, 2])
    )


@pytest.mark.parametrize("name", ["roc_auc", "log_loss"])
def test_bad_predictions_raise_scikit_learn_errors(name):
    metric = resolve_metric("binary", name)
    proba = _proba(50, 2)
    proba[0] = np.nan
    with pytest.raises(ValueError):
        metric(RNG.integers(0, 2, 50), proba)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_roc_auc_of_rows_of_one_class_is_undefined_as_in_scikit_learn():
    assert np.isnan(resolve_metric("binary", "roc_auc")(np.zeros(50, dtype=int), _proba(50, 2)))


def test_non_finite_regression_values_raise():
    with pytest.raises(ValueError):
        resolve_metric("regression", "rmse")(np.zeros(3), np.array([0.0, np.inf, 1.0]))
