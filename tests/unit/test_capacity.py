"""The capacity check: the space's largest network must overfit a small sample before a search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
    return load_space(_space_path(tmp_path, learning_rate))


def _space_path(tmp_path, learning_rate: float):
    path = tmp_path / "fixed_lr.yaml"
    path.write_text(
        "name: fixed_lr\nbuilder: mlp\nparams:\n"
        "  n_layers: {type: int, low: 1, high: 2}\n"
        "  units: {type: int, low: 4, high: 8, per_layer: true}\n"
        f"  learning_rate: {{type: categorical, choices: [{learning_rate}]}}\n"
        "  batch_size: {type: categorical, choices: [32]}\n"
    )
    return path


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


def test_a_sample_whose_features_tell_nothing_apart_is_not_trained_and_does_not_block():
    # 'code' has more labels than the sample has rows of each: once rare labels are grouped,
    # every sampled row looks the same, so there is nothing a network could overfit.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"code": [f"c{i % 300}" for i in range(600)], "y": rng.normal(size=600)})
    report = check_capacity(load_space("mlp_small"), _dev(frame, "regression"), seed=0)
    assert report.passed and report.nothing_to_learn and report.epochs == 0
    assert "nothing to overfit" in report.describe() and "can overfit" not in report.describe()


def test_a_check_reaching_the_deadline_is_cut_short_and_does_not_block(tmp_path):
    import time

    from autodl.tuning.capacity import CapacityCheckInBackground

    check = CapacityCheckInBackground(_space_file(tmp_path, 1e-7), _dev(_table(600), "binary"), seed=0)
    check.start()
    report = check.report(deadline=time.monotonic() + 1.0)
    assert report.cut_short and report.passed and report.epochs < 150
    assert "cut short by the time limit" in report.describe()


def test_the_background_check_runs_once_and_hands_over_its_report_or_its_error(monkeypatch):
    import autodl.tuning.capacity as capacity

    calls = []

    def fake_check(space, data, *, seed, cancel):
        calls.append(seed)
        if seed == 1:
            raise ValueError("the check broke")
        return "report"

    monkeypatch.setattr(capacity, "check_capacity", fake_check)
    check = capacity.CapacityCheckInBackground(None, None, seed=0)
    check.start()
    check.start()
    assert check.report() == "report" and calls == [0]
    broken = capacity.CapacityCheckInBackground(None, None, seed=1)  # report() starts it
    with pytest.raises(ValueError, match="the check broke"):
        broken.report()


def test_a_cancelled_check_stops_training_after_its_current_epoch(tmp_path):
    from autodl.tuning.capacity import CapacityCheckInBackground

    check = CapacityCheckInBackground(_space_file(tmp_path, 1e-7), _dev(_table(600), "binary"), seed=0)
    check.start()
    check.cancel()  # returns once the thread has ended
    assert check.report().epochs < 150  # would train all 150 epochs uncancelled (see above)


def test_a_search_whose_space_cannot_overfit_skips_the_keras_search(tmp_path):
    from autodl import search

    frame = _table(300)
    result = search(
        frame,
        target="y",
        space=str(_space_path(tmp_path, 1e-7)),
        trials=2,
        time_limit=300,
        folds=2,
        baselines=("dummy", "linear"),
        tracking=False,
        output_dir=tmp_path / "run",
    )
    assert "cannot fit even a small sample" in result.decisions["stop_reason"]
    assert [o.name for o in result.outcomes] == ["dummy", "linear"]
