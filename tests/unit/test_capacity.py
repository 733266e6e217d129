"""The capacity check: the space's largest network must overfit a small sample before a search."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autodl.data.dataset import build_dataset
from autodl.spaces import load_space
from autodl.tuning.capacity import SAMPLE_ROWS, check_capacity
from autodl.tuning.cv import DevData


def _dev(frame: pd.DataFrame, task: str) -> DevData:
    dataset = build_dataset(frame, target="y", task=task, folds=2, test_size=0.0)
    return DevData(
        dataset.features, dataset.y, [], dataset.profile, dataset.task.kind, dataset.task.n_classes
    )


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    return pd.DataFrame(x, columns=list("abcd")).assign(y=(x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int))


def _space_file(tmp_path, learning_rate: float):
    path = tmp_path / "fixed_lr.yaml"
    path.write_text(
        "name: fixed_lr\nbuilder: mlp\nparams:\n"
        "  n_layers: {type: int, low: 1, high: 2}\n"
        "  units: {type: int, low: 4, high: 8, per_layer: true}\n"
        f"  learning_rate: {{type: categorical, choices: [{learning_rate}]}}\n"
        "  batch_size: {type: categorical, choices: [32]}\n"
    )
    return load_space(path)


def test_the_largest_network_overfits_a_learnable_sample():
    report = check_capacity(load_space("mlp_small"), _dev(_table(600), "binary"), seed=0)
    assert report.passed
    assert report.final_loss <= 0.5 * report.reference_loss + 1e-3  # nothing to separate: floor 0
    assert 1 <= report.epochs < 150
    assert "can overfit a 256-row sample" in report.describe()


def test_a_network_that_cannot_learn_fails_the_check_after_every_epoch(tmp_path):
    report = check_capacity(_space_file(tmp_path, 1e-7), _dev(_table(600), "binary"), seed=0)
    assert not report.passed
    assert report.epochs == 150
    assert "cannot overfit" in report.describe()


def test_a_sample_smaller_than_a_batch_is_one_batch_an_epoch():
    report = check_capacity(load_space("mlp_small"), _dev(_table(20), "binary"), seed=0)
    assert report.passed and report.epochs >= 1
    assert SAMPLE_ROWS == 256  # the message's sample size
