"""Loading a model folder never runs code from it (issue 6: loading models safely).

scikit-learn parts are skops files loaded against an allow-list (classes from trusted packages;
functions only by name); Keras networks load in safe mode. A tampered model folder gives a one-line
DataError (and `autodl predict` exit code 2), and the payload never runs.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from cli_harness import QUICK, assert_one_line_error, assert_search_ok, run_cli
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from autodl.errors import DataError
from autodl.model import TabularModel


class Gadget:
    """A type no autodl model holds."""

    def __init__(self) -> None:
        self.payload = "anything"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A model folder from a real search (linear and gradient-boosting baselines) and its rows."""
    work = tmp_path_factory.mktemp("safety")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=80).round(3), "c": rng.choice(["a", "b"], 80)})
    frame["y"] = np.where(frame["x"] > 0, "yes", "no")
    frame.to_csv(work / "train.csv", index=False)
    flags = [*QUICK, "--baselines", "linear,hist_gradient_boosting", "--final", "ensemble"]
    outcome = run_cli("search", work / "train.csv", "--target", "y", *flags, "--output", work / "run")
    assert_search_ok(outcome, work / "run")
    return work / "run" / "model", frame.drop(columns=["y"])


@pytest.fixture
def model_copy(saved, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved[0], folder)
    return folder


def _parts(folder: Path) -> list[Path]:
    manifest = json.loads((folder / "autodl-model.json").read_text())
    return [folder / part["path"] for member in manifest["members"] for part in member["folds"]]


def _predict(folder: Path, rows: pd.DataFrame, tmp_path: Path):
    rows.to_csv(tmp_path / "rows.csv", index=False)
    return run_cli("predict", folder, tmp_path / "rows.csv", "-o", tmp_path / "p.csv")


def test_the_untampered_model_loads_and_predicts(saved, tmp_path):
    folder, rows = saved
    model = TabularModel.load(folder)
    assert len(model.predict(rows.head(5))) == 5
    outcome = _predict(folder, rows.head(5), tmp_path)
    assert outcome.code == 0, outcome.text


def test_a_gradient_boosting_candidate_with_its_partial_loads(saved):
    # HistGradientBoosting keeps functools.partial(check_array): the allow-list must still take it.
    from autodl.store import RunStore

    folder, rows = saved
    store = RunStore(folder.parent)
    types = {
        t
        for path in (folder.parent / "candidates").rglob("*.skops")
        for t in sio.get_untrusted_types(file=path)
    }
    assert {"functools.partial", "sklearn.utils.validation.check_array"} <= types
    cv = store.load_candidate("hist_gradient_boosting")
    assert cv is not None and len(cv.models) == 2
    assert len(cv.models[0].predict(rows.head(3))) == 3


def test_a_type_outside_the_allow_list_is_refused(model_copy, saved, tmp_path):
    sio.dump(Gadget(), _parts(model_copy)[0] / "estimator.skops")
    with pytest.raises(DataError, match=r"allow-list: .*Gadget"):
        TabularModel.load(model_copy)
    assert_one_line_error(_predict(model_copy, saved[1].head(3), tmp_path), "allow-list", "Gadget")


@pytest.mark.parametrize("target", ["exec", "memmap"])
def test_a_function_wrapped_to_run_at_prediction_time_is_refused(target, model_copy, saved, tmp_path):
    # Classes from trusted packages are allowed; functions are not, even through functools.partial.
    marker = tmp_path / "payload-ran"
    if target == "exec":
        wrapped = functools.partial(exec, f"open({str(marker)!r}, 'w').write('ran')", {})
    else:
        wrapped = functools.partial(np.memmap, str(marker), mode="w+", shape=(1,))
    tampered = Pipeline([("run", FunctionTransformer(func=wrapped))])
    sio.dump(tampered, _parts(model_copy)[0] / "preprocess.skops")
    with pytest.raises(DataError, match="allow-list"):
        TabularModel.load(model_copy)
    assert_one_line_error(_predict(model_copy, saved[1].head(3), tmp_path), "allow-list")
    assert not marker.exists()


def test_a_keras_network_with_a_lambda_layer_is_refused(model_copy, saved, tmp_path):
    from autodl.runtime import import_keras

    keras = import_keras()
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden)).save(tmp_path / "lambda.keras")

    part = _parts(model_copy)[0]
    (part / "keras").mkdir()
    shutil.copyfile(tmp_path / "lambda.keras", part / "keras" / "model.keras")
    state = {"init": {"task": "binary", "n_classes": 2}, "y_mean": None, "y_std": None, "n_features_in": 4}
    (part / "keras" / "estimator.json").write_text(json.dumps(state))
    manifest_path = model_copy / "autodl-model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["members"][0]["folds"][0]["estimator"] = "keras"
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(DataError, match="Lambda"):
        TabularModel.load(model_copy)
    line = assert_one_line_error(_predict(model_copy, saved[1].head(3), tmp_path), "Lambda", "model.keras")
    assert "safe_mode=False" not in line and "enable_unsafe_deserialization" not in line
