"""The search engine as a user relies on it: resume, parallel workers, deadlines, hypermodels."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from autodl import search
from autodl.errors import ConfigError
from autodl.tuning.engine import make_pruner, make_sampler

FAST = {
    "folds": 2,
    "space": "mlp_small",
    "max_epochs": 2,
    "baselines": ("linear",),
    "tracking": False,
    "capacity_check": False,
}


def _outcome_names(folder: Path) -> list[str]:
    return [
        json.loads(line)["name"]
        for path in sorted(folder.glob("outcomes*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_resume_continues_without_redoing_finished_work(titanic_csv, tmp_path):
    out = tmp_path / "run"
    first = search(titanic_csv, target="Survived", trials=2, time_limit=300, output_dir=out, **FAST)
    assert {o.name for o in first.outcomes} == {"linear", "keras_trial_0", "keras_trial_1"}

    second = search(
        titanic_csv, target="Survived", trials=4, time_limit=300, output_dir=out, resume=True, **FAST
    )
    names = _outcome_names(out)
    assert len(names) == len(set(names)), "a finished candidate was run twice"
    assert sorted(names) == ["keras_trial_0", "keras_trial_1", "keras_trial_2", "keras_trial_3", "linear"]
    assert {o.name for o in second.outcomes} == set(names)
    assert len(second.leaderboard) >= 3


def test_resume_refuses_other_settings(titanic_csv, tmp_path):
    from autodl.errors import ConfigError

    out = tmp_path / "run"
    search(titanic_csv, target="Survived", trials=0, time_limit=300, output_dir=out, **FAST)
    with pytest.raises(ConfigError, match="seed"):
        search(
            titanic_csv,
            target="Survived",
            trials=0,
            time_limit=300,
            output_dir=out,
            resume=True,
            seed=1,
            **FAST,
        )


def test_a_new_search_refuses_a_used_output_folder(titanic_csv, tmp_path):
    from autodl.errors import ConfigError

    out = tmp_path / "run"
    search(titanic_csv, target="Survived", trials=0, time_limit=300, output_dir=out, **FAST)
    with pytest.raises(ConfigError, match="--resume"):
        search(titanic_csv, target="Survived", trials=0, time_limit=300, output_dir=out, **FAST)


def test_two_workers_share_one_study_without_lost_or_duplicated_trials(titanic_csv, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out = tmp_path / "run"
    result = search(
        titanic_csv,
        target="Survived",
        trials=6,
        time_limit=400,
        output_dir=out,
        workers=2,
        **{**FAST, "trials_per_process": 2},
    )
    keras = [n for n in _outcome_names(out) if n.startswith("keras_trial_")]
    assert len(keras) == len(set(keras)), "a trial was recorded twice"
    assert 6 <= len(keras) <= 7  # at most workers - 1 trials beyond the budget
    assert (out / "outcomes-w1.jsonl").is_file(), "the worker process ran no trial"
    # After two trials each, the main process and the worker hand over to fresh processes.
    assert (out / "outcomes-w2.jsonl").is_file(), "no fresh process took over"
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.load_study(study_name="autodl", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(f"keras_trial_{t.number}" for t in finished) == sorted(keras), "a finished trial was lost"
    assert {o.name for o in result.outcomes} >= set(keras)


def test_time_limit_is_honoured_inside_a_trial(titanic_csv, tmp_path):
    endless = tmp_path / "endless.yaml"
    endless.write_text(
        textwrap.dedent(
            """
            name: endless
            params:
              n_layers: {type: categorical, choices: [1]}
              units: {type: categorical, choices: [8], per_layer: true}
              learning_rate: {type: float, low: 1.0e-5, high: 2.0e-5, log: true}
              batch_size: {type: categorical, choices: [8]}
            fixed: {max_epochs: 100000, patience: 100000}
            """
        )
    )
    started = time.monotonic()
    result = search(
        titanic_csv,
        target="Survived",
        trials=3,
        time_limit=15,
        output_dir=tmp_path / "run",
        **{**FAST, "space": str(endless), "max_epochs": None},
    )
    elapsed = time.monotonic() - started
    assert elapsed < 15 + 30, f"the search overran its 15 s limit by {elapsed - 15:.0f} s"
    keras = [o for o in result.outcomes if o.family == "keras"]
    # The trial is cut after whole epochs: its towers keep their best epochs so far and count.
    assert len(keras) == 1 and keras[0].state == "complete", keras
    assert keras[0].reason.startswith("time limit reached after epoch")
    assert all(detail["stopped_at_deadline"] for detail in keras[0].fold_details)
    assert result.decisions["stop_reason"].startswith("time limit reached")


HYPERMODELS = """
import keras
import keras_tuner


def build_model(hp):
    model = keras.Sequential()
    for i in range(hp.Int("layers", 1, 2)):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 8, 16, step=8), activation="relu"))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    model.compile(keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")), "binary_crossentropy")
    return model


class Branching(keras_tuner.HyperModel):
    def build(self, hp):
        kind = hp.Choice("kind", ["wide", "deep"])
        model = keras.Sequential()
        with hp.conditional_scope("kind", ["wide"]):
            if kind == "wide":
                model.add(keras.layers.Dense(hp.Int("wide_units", 16, 32, step=16), activation="relu"))
        with hp.conditional_scope("kind", ["deep"]):
            if kind == "deep":
                for _ in range(2):
                    model.add(keras.layers.Dense(hp.Fixed("deep_units", 8), activation="relu"))
        if hp.Boolean("dropout"):
            model.add(keras.layers.Dropout(0.1))
        model.add(keras.layers.Dense(1, activation="sigmoid"))
        model.compile("adam", "binary_crossentropy")
        return model

    def fit(self, hp, model, *args, **kwargs):
        kwargs["batch_size"] = hp.Choice("batch_size", [32, 64])
        return model.fit(*args, **kwargs)
"""


@pytest.mark.parametrize("name", ["build_model", "Branching"])
def test_keras_tuner_hypermodels_run_unchanged(titanic_csv, tmp_path, name):
    module = tmp_path / "user_models.py"
    module.write_text(HYPERMODELS)
    result = search(
        titanic_csv,
        target="Survived",
        trials=2,
        time_limit=300,
        output_dir=tmp_path / "run",
        **{**FAST, "space": f"{module}:{name}", "max_epochs": 2},
    )
    trials = [o for o in result.outcomes if o.family == "keras"]
    assert len(trials) == 2 and all(o.state == "complete" for o in trials), [o.reason for o in trials]
    for trial in trials:
        if name == "Branching":
            assert "batch_size" in trial.params, "HyperModel.fit's own hyperparameter was not sampled"
            assert ("wide_units" in trial.params) == (trial.params["kind"] == "wide"), (
                "conditional scope ignored"
            )
        else:
            assert set(trial.params) >= {"layers", "units_0", "lr"}
    frame = __import__("pandas").read_csv(titanic_csv).drop(columns="Survived").head(5)
    assert len(result.model.predict(frame)) == 5


def test_a_missing_hypermodel_is_a_clear_error(titanic_csv, tmp_path):
    from autodl.errors import ConfigError

    with pytest.raises(ConfigError, match="no attribute"):
        module = tmp_path / "empty_models.py"
        module.write_text("x = 1\n")
        search(
            titanic_csv,
            target="Survived",
            trials=1,
            output_dir=tmp_path / "run",
            **{**FAST, "space": f"{module}:nope"},
        )


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes"])
def test_samplers(name):
    assert make_sampler(name, seed=0) is not None


def test_gp_sampler_drives_a_search(penguins_csv, tmp_path):
    pytest.importorskip("torch", reason="--sampler gp needs the optional 'autodl[gp]' extra")
    result = search(
        penguins_csv,
        target="species",
        trials=8,
        time_limit=300,
        output_dir=tmp_path / "run",
        **{**FAST, "sampler": "gp"},
    )
    trials = [o for o in result.outcomes if o.family == "keras"]
    assert len(trials) == 8 and all(o.state == "complete" for o in trials)
    # After the warm-start points the GP proposes new points, not repeats.
    learning_rates = [o.params["learning_rate"] for o in trials]
    assert len(set(learning_rates)) >= 6


def test_gp_sampler_without_torch_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ConfigError, match="autodl\\[gp\\]"):
        make_sampler("gp", seed=0)


@pytest.mark.parametrize("name", ["median", "hyperband", "successive_halving", "wilcoxon", "none"])
def test_pruners(name):
    assert make_pruner(name) is not None


@pytest.mark.slow  # a soak test: 30 trials, ~90 s on two cores
def test_memory_stays_flat_over_30_trials(tmp_path):
    import os

    import numpy as np
    import pandas as pd

    from autodl.events import Reporter

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 5)), columns=list("abcde"))
    frame["y"] = (frame["a"] + rng.normal(size=200) > 0).astype(int)
    rss: list[float] = []

    page = os.sysconf("SC_PAGE_SIZE")

    class Probe(Reporter):
        def outcome(self, outcome, **_):
            if outcome.family == "keras":
                resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
                rss.append(resident_pages * page / 2**20)

    result = search(
        frame,
        target="y",
        trials=30,
        time_limit=900,
        output_dir=tmp_path / "run",
        reporter=Probe(),
        **{**FAST, "trials_per_process": 10},
    )
    assert len(rss) == 30
    # TensorFlow keeps ~2 MiB of native memory per new layer shape it has run (oneDNN), and every
    # trial brings new widths: after 10 trials a fresh process takes the search over, so this
    # process stops growing, and no trial is lost or repeated on the way.
    numbers = sorted(o.trial_number for o in result.outcomes if o.family == "keras")
    assert numbers == list(range(30))
    assert result.decisions["stop_reason"] == "trial budget reached (30 trials)"
    assert {p.name for p in (tmp_path / "run").glob("outcomes-w*.jsonl")} == {
        "outcomes-w1.jsonl",
        "outcomes-w2.jsonl",
    }
    growth = rss[-1] - rss[14]
    assert growth < 15, f"memory grew {growth:.0f} MiB from trial 15 to trial 30: {[round(r) for r in rss]}"


def test_wilcoxon_pruner_scores_trials_fold_by_fold(titanic_csv, tmp_path):
    result = search(
        titanic_csv,
        target="Survived",
        trials=2,
        time_limit=300,
        output_dir=tmp_path / "run",
        **{**FAST, "pruner": "wilcoxon"},
    )
    trials = [o for o in result.outcomes if o.family == "keras"]
    assert len(trials) == 2 and all(len(o.fold_scores) == 2 for o in trials if o.state == "complete")
