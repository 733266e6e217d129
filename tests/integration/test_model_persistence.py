"""Every kind of fold pipeline survives TabularModel.save / TabularModel.load unchanged.

A baseline or network whose fitted state holds an object outside the skops allow-list (or that
Keras safe mode refuses) would fail here, not in a user's `autodl predict` weeks later.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from autodl.candidates.baselines import baseline_candidates
from autodl.candidates.keras_towers import cross_validate_towers
from autodl.data.dataset import Dataset, build_dataset
from autodl.errors import DataError
from autodl.metrics import resolve_metric
from autodl.model import Member, TabularModel
from autodl.spaces import load_space
from autodl.spaces.suggest import defaults_point
from autodl.split import make_folds
from autodl.store import RunStore
from autodl.tuning.cv import CVResult, DevData, cross_validate

N_ROWS = 160
BASELINES = [c.name for c in baseline_candidates("binary", N_ROWS, 0)]


def table(task: str, n: int = N_ROWS, seed: int = 3) -> pd.DataFrame:
    """Numbers with gaps, a category with gaps, a date with gaps; a target that depends on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    frame = pd.DataFrame(
        {
            "x": x.round(4),
            "count": rng.integers(0, 9, size=n).astype(float),
            "colour": colour,
            "signup": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, size=n), unit="D"),
        }
    )
    frame["signup"] = frame["signup"].dt.strftime("%Y-%m-%d")
    signal = 1.5 * x + (colour == "red") - 0.5 * (colour == "blue") + rng.normal(scale=0.7, size=n)
    if task == "regression":
        frame["target"] = (10 + 3 * signal).round(3)
    elif task == "binary":
        frame["target"] = np.where(signal > 0.2, "yes", "no")
    else:
        frame["target"] = np.select([signal < -0.5, signal < 0.8], ["low", "mid"], "high")
    for column, share in (("x", 0.1), ("count", 0.1), ("colour", 0.1), ("signup", 0.1)):
        frame.loc[rng.random(n) < share, column] = np.nan
    return frame


def prepared(task: str) -> tuple[Dataset, DevData]:
    dataset = build_dataset(table(task), target="target", task=task, folds=2, test_size=0.0)
    assert dataset.task.kind == task
    kinds = {c.name: c.kind for c in dataset.profile.columns}
    assert kinds == {"x": "numeric", "count": "numeric", "colour": "categorical", "signup": "datetime"}
    stratify = task != "regression"
    folds = make_folds(dataset.y, folds=2, repeats=1, stratify=stratify, seed=0)
    dev = DevData(
        dataset.features, dataset.y, folds, dataset.profile, dataset.task.kind, dataset.task.n_classes
    )
    return dataset, dev


def raw_rows(dataset: Dataset) -> pd.DataFrame:
    """Training-like rows, a category never seen in training, and a row with every feature missing."""
    rows = dataset.features.head(6).copy()
    unseen = rows.iloc[[0]].copy()
    unseen["colour"] = "ultraviolet"
    empty = rows.iloc[[0]].copy()
    empty.loc[:, :] = np.nan
    out = pd.concat([rows, unseen, empty], ignore_index=True)
    assert out.iloc[-1].isna().all() and out["colour"].iloc[-2] == "ultraviolet"
    return out


def round_trip(dataset: Dataset, name: str, pipelines: list, folder) -> tuple[TabularModel, TabularModel]:
    model = TabularModel(
        members=[Member(name, 1.0, pipelines)],
        task=dataset.task.kind,
        classes=dataset.task.classes,
        columns=[str(c) for c in dataset.features.columns],
        target=dataset.target_name,
    )
    model.save(folder)
    return model, TabularModel.load(folder)


def assert_same_predictions(before: TabularModel, after: TabularModel, rows: pd.DataFrame) -> None:
    expected = before.scores(rows)
    assert np.all(np.isfinite(expected)), expected
    np.testing.assert_allclose(after.scores(rows), expected, rtol=1e-6, atol=1e-7)
    if before.task == "regression":  # forests sum trees over threads: equal up to rounding
        np.testing.assert_allclose(after.predict(rows), before.predict(rows), rtol=1e-9)
    else:
        assert list(after.predict(rows)) == list(before.predict(rows))
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-6)
        assert set(after.predict(rows)) <= set(before.classes)
        assert after.classes == before.classes


@pytest.fixture(scope="module")
def binary():
    return prepared("binary")


@pytest.fixture(scope="module")
def regression():
    return prepared("regression")


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_model_round_trips(name, task, binary, regression, tmp_path):
    dataset, dev = binary if task == "binary" else regression
    candidates = {c.name: c for c in baseline_candidates(task, dataset.n_rows, 0)}
    assert set(candidates) == set(BASELINES)
    cv = cross_validate(candidates[name], dev, resolve_metric(task, None))
    assert len(cv.models) == 2
    before, after = round_trip(dataset, name, cv.models, tmp_path / name)
    assert_same_predictions(before, after, raw_rows(dataset))


def test_poisson_gradient_boosting_round_trips(regression, tmp_path):
    """The baseline a never-negative regression target adds predicts through its log link
    (positive values) after a reload."""
    dataset, dev = regression
    y = np.abs(dev.y)
    dev = DevData(dev.features, y, dev.folds, dev.profile, dev.task, dev.n_classes)
    candidates = baseline_candidates("regression", dataset.n_rows, 0, nonnegative_target=True)
    poisson = next(c for c in candidates if c.name == "hist_gradient_boosting_poisson")
    cv = cross_validate(poisson, dev, resolve_metric("regression", None))
    before, after = round_trip(dataset, poisson.name, cv.models, tmp_path / "poisson")
    assert_same_predictions(before, after, raw_rows(dataset))
    assert np.all(after.scores(raw_rows(dataset)) > 0)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_keras_fold_tower_model_round_trips(task, binary, regression, tmp_path):
    dataset, dev = {"binary": binary, "regression": regression}.get(task) or prepared(task)
    space = load_space("mlp_small")
    fixed = {**space.fixed, "max_epochs": 3}
    cv = cross_validate_towers(defaults_point(space), fixed, dev, resolve_metric(task, None), seed=0)
    assert len(cv.models) == 2
    before, after = round_trip(dataset, "keras_trial_0", cv.models, tmp_path / "keras")
    assert (tmp_path / "keras" / "member_0" / "fold_1" / "keras" / "model.keras").is_file()
    assert_same_predictions(before, after, raw_rows(dataset))


def test_final_model_built_from_stored_candidates_stands_alone(binary, tmp_path):
    """The search stores each candidate once; the final model reuses those files, and keeps
    working after the search's candidate store is deleted."""
    dataset, dev = binary
    metric = resolve_metric("binary", None)
    candidates = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}
    space = load_space("mlp_small")
    members = {
        "random_forest": cross_validate(candidates["random_forest"], dev, metric).models,
        "keras_trial_0": cross_validate_towers(
            defaults_point(space), {**space.fixed, "max_epochs": 3}, dev, metric, seed=0
        ).models,
    }
    store = RunStore(tmp_path / "run")
    for name, pipelines in members.items():
        store.save_candidate(name, "x", CVResult([0.5, 0.5], np.zeros(len(dev.y)), pipelines, 1.0))
    model = TabularModel(
        members=[Member(name, 0.5, pipelines) for name, pipelines in members.items()],
        task=dataset.task.kind,
        classes=dataset.task.classes,
        columns=[str(c) for c in dataset.features.columns],
        target=dataset.target_name,
    )
    stored = {path: path.read_bytes() for path in (tmp_path / "run").rglob("*") if path.is_file()}
    saved = {name: store.saved_parts(name) for name in members}
    model.save(tmp_path / "model", saved=saved)
    model.save(tmp_path / "model", saved=saved)  # a resumed search saves its model again
    model.save(tmp_path / "model")  # serialized anew: must not write through links into the store
    assert all(path.read_bytes() == data for path, data in stored.items())
    model.save(tmp_path / "model", saved=saved)
    # the store keeps a network as weights; the model folder as a native Keras file
    assert (
        tmp_path / "run" / "candidates" / "keras_trial_0" / "models" / "fold_0" / "keras" / "network.npz"
    ).is_file()
    assert (tmp_path / "model" / "member_1" / "fold_0" / "keras" / "model.keras").is_file()
    # its preprocessing is the stored file, not serialized again (a text vocabulary takes seconds)
    stored_preprocessing = (
        tmp_path / "run" / "candidates" / "keras_trial_0" / "models" / "fold_1" / "preprocess.skops"
    )
    assert (tmp_path / "model" / "member_1" / "fold_1" / "preprocess.skops").samefile(stored_preprocessing)
    shutil.rmtree(tmp_path / "run")
    assert_same_predictions(model, TabularModel.load(tmp_path / "model"), raw_rows(dataset))


def test_on_large_data_a_baseline_pool_member_is_held_on_disk_only(binary, tmp_path, monkeypatch):
    """Past IN_MEMORY_ROWS development rows a baseline's fold models are dropped from memory once
    written (a million rows' forests are a gigabyte) and loaded again, the same, when needed."""
    from autodl import pool as pool_module

    dataset, dev = binary
    metric = resolve_metric("binary", None)
    candidates = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}
    cv = cross_validate(candidates["random_forest"], dev, metric)
    monkeypatch.setattr(pool_module, "IN_MEMORY_ROWS", len(dev.y) - 1)
    pool = pool_module.CandidatePool(metric, RunStore(tmp_path / "run"))
    pool.add("random_forest", "baseline", cv)
    assert pool.models["random_forest"] is None
    rows = dev.features.head(50)
    for loaded, fitted in zip(pool.fold_models("random_forest"), cv.models, strict=True):
        np.testing.assert_allclose(loaded.predict_proba(rows), fitted.predict_proba(rows), rtol=1e-12)


def test_trials_sharing_fold_preprocessors_store_them_once(binary, tmp_path):
    """The Keras trials of a search share each fold's fitted preprocessor: the store writes it
    once and links it for later trials, and each stored trial still loads and predicts as fitted."""
    dataset, dev = binary
    metric = resolve_metric("binary", None)
    space = load_space("mlp_small")
    fixed = {**space.fixed, "max_epochs": 2}
    trials = {
        f"keras_trial_{seed}": cross_validate_towers(defaults_point(space), fixed, dev, metric, seed=seed)
        for seed in (0, 1)
    }
    store = RunStore(tmp_path / "run")
    for name, cv in trials.items():
        store.save_candidate(name, "keras", cv)
    first, second = (tmp_path / "run" / "candidates" / name / "models" for name in trials)
    for fold in ("fold_0", "fold_1"):
        assert (first / fold / "preprocess.skops").samefile(second / fold / "preprocess.skops")
        assert not (first / fold / "keras" / "network.npz").samefile(second / fold / "keras" / "network.npz")
    shutil.rmtree(first.parent)  # a later trial's files stand alone
    rows = raw_rows(dataset)
    loaded = store.load_candidate("keras_trial_1")
    # what the held-out predictions cost is kept: it sizes the time set aside for test scoring
    assert loaded.predict_seconds == trials["keras_trial_1"].predict_seconds > 0
    for stored, fitted in zip(loaded.models, trials["keras_trial_1"].models, strict=True):
        np.testing.assert_allclose(stored.predict_proba(rows), fitted.predict_proba(rows), rtol=1e-6)


def test_logging_the_model_checks_its_input_example_without_reading_the_folder_back(
    binary, tmp_path, monkeypatch
):
    """MLflow serves the input example through the logged model before it returns; the model in
    memory stands in for its own files there (a forest ensemble took seconds to read back). The
    logged model loads from its files everywhere else."""
    import mlflow

    from autodl import serve

    dataset, dev = binary
    linear = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}["linear"]
    model, _ = round_trip(
        dataset, "linear", cross_validate(linear, dev, resolve_metric("binary", None)).models, tmp_path / "m"
    )

    read_back = []

    def refuse(folder):
        read_back.append(folder)
        raise AssertionError(f"read back from {folder}")

    with monkeypatch.context() as patched:
        patched.setattr(TabularModel, "load", refuse)
        with mlflow.start_run():
            info = serve.log_pyfunc_model(tmp_path / "m", dataset.features.head(5), model)
    assert read_back == []
    assert serve.being_logged == {}
    rows = raw_rows(dataset)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    out = pd.DataFrame(pyfunc.predict(rows))
    expected = model.predict_frame(rows)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "ignoring")  # the target column in the rows is no unknown column
        serve._predict_pyfunc(pyfunc, rows.assign(**{model.target: 1}))
    assert list(out.columns) == list(expected.columns) and len(expected.columns) == 3
    np.testing.assert_allclose(
        out.iloc[:, 1:].to_numpy(float), expected.iloc[:, 1:].to_numpy(float), rtol=1e-9
    )


def test_the_output_signature_from_scores_saves_a_prediction_and_matches_the_predicted_one(binary, tmp_path):
    """A search passes its out-of-fold scores for the output signature: the example is then
    predicted once (MLflow's serving check), not twice, and the signature is the same."""
    import mlflow

    from autodl import serve

    dataset, dev = binary
    linear = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}["linear"]
    cv = cross_validate(linear, dev, resolve_metric("binary", None))
    model, _ = round_trip(dataset, "linear", cv.models, tmp_path / "m")
    example = dataset.features.head(5)
    calls = []
    scores = model.scores

    def counted(frame):
        calls.append(len(frame))
        return scores(frame)

    model.scores = counted
    with mlflow.start_run():
        predicted = serve.log_pyfunc_model(tmp_path / "m", example, model)
        assert calls == [5, 5]
        from_scores = serve.log_pyfunc_model(tmp_path / "m", example, model, cv.oof[dev.held_out])
        assert calls == [5, 5, 5]
    assert from_scores.signature == predicted.signature


def test_logging_the_model_checks_its_pins_without_scanning_every_installed_package(
    binary, tmp_path, monkeypatch
):
    """MLflow's check of the pinned requirements still warns about a pin the environment does
    not satisfy, without mapping every installed module to its package (~1.4 s), and MLflow's
    own lazily built map is left unbuilt for any later model."""
    import logging

    import mlflow
    from mlflow.utils import requirements_utils

    from autodl import serve

    dataset, dev = binary
    linear = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}["linear"]
    model, _ = round_trip(
        dataset, "linear", cross_validate(linear, dev, resolve_metric("binary", None)).models, tmp_path / "m"
    )
    # unbuilt, as in a search's process (loading a pyfunc model, as tests before this one do, builds it)
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    scans = []
    scan = requirements_utils.importlib_metadata.packages_distributions
    monkeypatch.setattr(
        requirements_utils.importlib_metadata,
        "packages_distributions",
        lambda: scans.append(1) or scan(),
    )
    pins = serve.pinned_requirements()
    monkeypatch.setattr(serve, "pinned_requirements", lambda: [*pins, "packaging==0.0.1"])
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    logger = logging.getLogger(requirements_utils.__name__)
    logger.addHandler(handler)
    try:
        with mlflow.start_run():
            serve.log_pyfunc_model(tmp_path / "m", dataset.features.head(5), model)
    finally:
        logger.removeHandler(handler)
    assert scans == []
    assert requirements_utils._MODULES_TO_PACKAGES is None
    assert [m for m in warned if "packaging==0.0.1" in m], warned


def test_stored_network_weights_that_do_not_fit_fail_the_load_clearly(binary, tmp_path):
    """A stored tower network is its weights plus the builder's recipe; weights of another shape
    are refused when the candidate loads (one clear error), never at a later prediction."""
    dataset, dev = binary
    space = load_space("mlp_small")
    cv = cross_validate_towers(
        defaults_point(space), {**space.fixed, "max_epochs": 2}, dev, resolve_metric("binary", None), seed=0
    )
    store = RunStore(tmp_path / "run")
    store.save_candidate("keras_trial_0", "keras", cv)
    weights = (
        tmp_path / "run" / "candidates" / "keras_trial_0" / "models" / "fold_1" / "keras" / "network.npz"
    )
    with np.load(weights) as stored:
        np.savez(weights, *[np.zeros((3, 3), dtype=np.float32) for _ in stored.files])
    with pytest.raises(DataError, match="network.npz"):
        store.load_candidate("keras_trial_0")


def test_a_fold_tower_trial_is_stored_while_the_search_goes_on(binary, tmp_path, monkeypatch):
    """A trial's networks, held as weights, and its fold preprocessing are written in the
    background (no Keras call needed); asking the pool for its fold models waits for the files."""
    import threading

    from autodl.pool import CandidatePool

    dataset, dev = binary
    metric = resolve_metric("binary", None)
    space = load_space("mlp_small")
    cv = cross_validate_towers(defaults_point(space), {**space.fixed, "max_epochs": 2}, dev, metric, seed=0)
    store = RunStore(tmp_path / "run")
    release = threading.Event()
    write = store._save_candidate
    monkeypatch.setattr(store, "_save_candidate", lambda *args: (release.wait(30), write(*args)))
    pool = CandidatePool(metric, store)
    pool.add("keras_trial_0", "keras", cv)  # returns with the write still held back
    assert not (tmp_path / "run" / "candidates" / "keras_trial_0" / "candidate.json").exists()
    threading.Timer(0.5, release.set).start()
    models = pool.fold_models("keras_trial_0")
    assert (tmp_path / "run" / "candidates" / "keras_trial_0" / "candidate.json").is_file()
    assert all(pipeline[-1].held_as_weights for pipeline in models)  # the caller may build them now
    stored = store.load_candidate("keras_trial_0")
    rows = dev.features.head(20)
    for loaded, fitted in zip(stored.models, models, strict=True):
        np.testing.assert_allclose(loaded.predict_proba(rows), fitted.predict_proba(rows), rtol=1e-6)


def test_predicting_from_a_model_folder_does_not_import_mlflow(binary, tmp_path):
    """`autodl predict <folder>` loads the model and predicts without MLflow's ~1.3 s import."""
    import subprocess
    import sys

    dataset, dev = binary
    linear = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}["linear"]
    cv = cross_validate(linear, dev, resolve_metric("binary", None))
    model, _ = round_trip(dataset, "linear", cv.models, tmp_path / "m")
    rows = raw_rows(dataset)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import sys, pandas as pd\n"
        "from autodl.serve import load_predictor\n"
        f"out = load_predictor({str(tmp_path / 'm')!r})(pd.read_csv({str(tmp_path / 'rows.csv')!r}))\n"
        "print(len(out), sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == [str(len(rows)), "[]"]


def test_members_with_equal_fold_preprocessing_transform_the_rows_once_each(binary, tmp_path, monkeypatch):
    """Baselines of one preprocessing style fit equal preprocessors on each fold: the model
    transforms the rows once for all of them, in memory and once loaded, and predicts what
    averaging each fold pipeline's own predictions gives."""
    from sklearn.compose import ColumnTransformer

    from autodl.candidates.base import predict_scores

    dataset, dev = binary
    metric = resolve_metric("binary", None)
    candidates = {c.name: c for c in baseline_candidates("binary", dataset.n_rows, 0)}
    styles = {"random_forest": "tree", "extra_trees": "tree", "linear": "dense"}
    assert {name: candidates[name].style for name in styles} == styles
    members = [Member(name, 1 / 3, cross_validate(candidates[name], dev, metric).models) for name in styles]
    rows = raw_rows(dataset)
    expected = sum(
        member.weight * np.mean([predict_scores(p, rows, 2) for p in member.pipelines], axis=0)
        for member in members
    )
    transformed = []
    real_transform = ColumnTransformer.transform

    def counted(self, X, **params):
        transformed.append(self)
        return real_transform(self, X, **params)

    monkeypatch.setattr(ColumnTransformer, "transform", counted)
    model = TabularModel(
        members=members,
        task=dataset.task.kind,
        classes=dataset.task.classes,
        columns=[str(c) for c in dataset.features.columns],
        target=dataset.target_name,
    )
    np.testing.assert_allclose(model.scores(rows), expected, rtol=0, atol=1e-12)
    # "tree" keeps numbers as they are: its two folds' preprocessors are equal too; "dense"
    # scales by each fold's statistics. 3 transforms, not 6.
    assert len(transformed) == 3
    model.save(tmp_path / "model")
    transformed.clear()
    np.testing.assert_allclose(
        TabularModel.load(tmp_path / "model").scores(rows), expected, rtol=0, atol=1e-12
    )
    assert len(transformed) == 3
