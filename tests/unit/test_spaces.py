"""Search spaces: shipped files load and validate; bad files fail with file, key path and a fix."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from autodl import cli
from autodl.errors import ConfigError
from autodl.spaces import SearchSpace, list_spaces, load_space
from autodl.spaces.schema import BUILDER_PARAMS
from autodl.spaces.suggest import defaults_point, suggest_params

SHIPPED = sorted(list_spaces())

GOOD = """\
name: tiny
description: a small test space
builder: mlp
params:
  n_layers:      {type: int, low: 1, high: 3}
  units:         {type: int, low: 8, high: 64, log: true, per_layer: true}
  optimizer:     {type: categorical, choices: [adam, sgd]}
  momentum:      {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
  batch_size:    {type: categorical, choices: [32, 64]}
fixed:
  max_epochs: 10
defaults:
  n_layers: 2
  units: [32, 16]
  optimizer: adam
  learning_rate: 1.0e-3
  batch_size: 32
"""


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- shipped spaces


def test_shipped_spaces_exist():
    assert "mlp" in SHIPPED and "mlp_small" in SHIPPED
    assert all(description for description in list_spaces().values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads_and_defaults_are_in_range(name):
    space = load_space(name)
    assert isinstance(space, SearchSpace)
    assert space.name == name
    assert space.params and space.builder in BUILDER_PARAMS
    assert {"max_epochs", "patience", "validation_fraction"} <= set(space.fixed)
    by_name = {param.name: param for param in space.params}
    point = defaults_point(space)
    assert point
    for key, value in point.items():
        base = key if key in by_name else key.rsplit("_", 1)[0]
        param = by_name[base]
        assert param.contains(value), (key, value, param)
        if key != base:
            assert param.per_layer
            assert int(key.rsplit("_", 1)[1]) < point["n_layers"]
    for param in space.params:
        if param.type == "int":
            assert isinstance(param.low, int) and isinstance(param.high, int)


@pytest.mark.parametrize("name", SHIPPED)
def test_suggest_params_with_fixed_trial_on_defaults(name):
    space = load_space(name)
    point = defaults_point(space)
    params = suggest_params(optuna.trial.FixedTrial(point), space)
    assert params == point


@pytest.mark.parametrize("name", SHIPPED)
def test_suggest_params_with_a_real_trial_stays_in_range(name):
    space = load_space(name)
    by_name = {param.name: param for param in space.params}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        params = suggest_params(trial, space)
        for key, value in params.items():
            param = by_name.get(key) or by_name[key.rsplit("_", 1)[0]]
            assert param.contains(value), (key, value)
        study.tell(trial, 0.0)


def test_mlp_conditional_params_follow_the_optimizer():
    space = load_space("mlp")
    base = defaults_point(space)
    sgd = {**base, "optimizer": "sgd", "momentum": 0.9, "nesterov": True}
    params = suggest_params(optuna.trial.FixedTrial(sgd), space)
    assert params["momentum"] == 0.9 and params["nesterov"] is True
    assert "weight_decay" not in params
    adam = suggest_params(optuna.trial.FixedTrial(base), space)
    assert "momentum" not in adam and "weight_decay" not in adam


def test_defaults_point_expands_per_layer_values(tmp_path):
    space = load_space(write_space(tmp_path, GOOD))
    point = defaults_point(space)
    assert point == {"n_layers": 2, "units_0": 32, "units_1": 16, "optimizer": "adam",
                     "learning_rate": 1.0e-3, "batch_size": 32}  # fmt: skip
    single = load_space(write_space(tmp_path, GOOD.replace("units: [32, 16]", "units: 24"), "one.yaml"))
    assert defaults_point(single)["units_1"] == 24


def test_good_file_loads(tmp_path):
    path = write_space(tmp_path, GOOD)
    space = load_space(path)
    assert space.name == "tiny" and space.source == str(path)
    assert space.fixed == {"max_epochs": 10, "patience": 12, "validation_fraction": 0.15}
    assert [param.name for param in space.params][:2] == ["n_layers", "units"]


def test_exponent_floats_without_a_dot(tmp_path):
    # `1e-4` is a float in YAML 1.2 and in every space file people write by hand.
    text = GOOD.replace("low: 1.0e-4, high: 1.0e-1", "low: 1e-4, high: 1E-1").replace(
        "learning_rate: 1.0e-3", "learning_rate: 1e-3"
    )
    space = load_space(write_space(tmp_path, text))
    learning_rate = next(param for param in space.params if param.name == "learning_rate")
    assert (learning_rate.low, learning_rate.high) == (1e-4, 1e-1)
    assert space.defaults["learning_rate"] == 1e-3
    assert space.defaults["optimizer"] == "adam"


def test_unknown_shipped_space_suggests():
    with pytest.raises(ConfigError, match="did you mean 'mlp'") as info:
        load_space("mpl")
    assert "mlp_small" in str(info.value)


def test_missing_space_file():
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_space("nothere.yaml")


# --------------------------------------------------------------------------- bad files

BAD_SPACES = {
    "param_typo": (
        GOOD.replace("learning_rate: {type", "learning_rat: {type"),
        ("params.learning_rat", "did you mean 'learning_rate'"),
    ),
    "key_typo": (
        GOOD.replace("n_layers:      {type: int", "n_layers:      {tpye: int"),
        ("params.n_layers.tpye", "did you mean 'type'"),
    ),
    "low_not_below_high": (
        GOOD.replace("{type: int, low: 1, high: 3}", "{type: int, low: 3, high: 3}"),
        ("params.n_layers", "low (3) must be below high (3)"),
    ),
    "low_above_high": (
        GOOD.replace("low: 0.8, high: 0.99", "low: 0.99, high: 0.8"),
        ("params.momentum", "low"),
    ),
    "log_with_zero_low": (
        GOOD.replace("low: 1.0e-4, high: 1.0e-1, log: true", "low: 0.0, high: 1.0e-1, log: true"),
        ("params.learning_rate.low", "log"),
    ),
    "log_with_negative_low": (
        GOOD.replace("low: 8, high: 64, log: true", "low: -8, high: 64, log: true"),
        ("params.units.low", "log"),
    ),
    "default_outside_range": (
        GOOD.replace("learning_rate: 1.0e-3\n", "learning_rate: 5.0\n"),
        ("defaults.learning_rate", "5.0", "outside"),
    ),
    "per_layer_default_outside_range": (
        GOOD.replace("units: [32, 16]", "units: [32, 1000]"),
        ("defaults.units", "1000"),
    ),
    "categorical_default_outside_choices": (
        GOOD.replace("optimizer: adam\n", "optimizer: nadam\n"),
        ("defaults.optimizer", "nadam"),
    ),
    "default_for_unknown_param": (
        GOOD.replace("batch_size: 32\n", "batch_sise: 32\n"),
        ("defaults.batch_sise", "did you mean 'batch_size'"),
    ),
    "unknown_top_level_key": (
        GOOD.replace("fixed:", "fixd:"),
        ("fixd", "did you mean 'fixed'"),
    ),
    "unknown_fixed_key": (
        GOOD.replace("max_epochs: 10", "max_epoch: 10"),
        ("fixed.max_epoch", "did you mean 'max_epochs'"),
    ),
    "bad_type": (
        GOOD.replace("{type: categorical, choices: [32, 64]}", "{type: choice, choices: [32, 64]}"),
        ("params.batch_size.type", "'choice'"),
    ),
    "unknown_numeric_scaling": (
        GOOD.replace(
            "  batch_size:",
            "  numeric_scaling: {type: categorical, choices: [standard, quantlie]}\n  batch_size:",
            1,
        ),
        ("params.numeric_scaling.choices", "did you mean 'quantile'"),
    ),
    "empty_choices": (
        GOOD.replace("choices: [adam, sgd]", "choices: []"),
        ("params.optimizer.choices",),
    ),
    "non_numeric_bound": (
        GOOD.replace("low: 1, high: 3", "low: one, high: 3"),
        ("params.n_layers.low", "'one'"),
    ),
    "int_with_fractional_bounds": (
        GOOD.replace("low: 1, high: 3", "low: 1.5, high: 3"),
        ("params.n_layers", "int"),
    ),
    "step_with_log": (
        GOOD.replace("high: 1.0e-1, log: true", "high: 1.0e-1, log: true, step: 0.01"),
        ("params.learning_rate.step",),
    ),
    "condition_on_undeclared_param": (
        GOOD.replace("when: {optimizer: sgd}", "when: {solver: sgd}"),
        ("params.momentum.when", "'solver'"),
    ),
    "condition_never_true": (
        GOOD.replace("when: {optimizer: sgd}", "when: {optimizer: lbfgs}"),
        ("params.momentum.when", "'lbfgs'"),
    ),
    "unknown_builder": (
        GOOD.replace("builder: mlp", "builder: resnet"),
        ("builder", "'resnet'"),
    ),
    "no_params": (
        "name: empty\nparams: {}\n",
        ("params", "empty"),
    ),
    "not_a_mapping": (
        "- just\n- a list\n",
        ("top level",),
    ),
    "invalid_yaml": (
        "params: {n_layers: {type: int, low: 1\n",
        ("not valid YAML",),
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_space_file(case, tmp_path):
    text, needles = BAD_SPACES[case]
    path = write_space(tmp_path, text, name=f"bad_{case}.yaml")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert f"bad_{case}.yaml" in message
    assert "Fix:" in message and "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_per_layer_before_n_layers(tmp_path):
    text = GOOD.replace(
        "  n_layers:      {type: int, low: 1, high: 3}\n  units:         {type: int, low: 8, high: 64, log: true, per_layer: true}\n",
        "  units:         {type: int, low: 8, high: 64, log: true, per_layer: true}\n  n_layers:      {type: int, low: 1, high: 3}\n",
    )
    assert text != GOOD
    with pytest.raises(ConfigError, match=r"params\.units\.per_layer"):
        load_space(write_space(tmp_path, text))


# --------------------------------------------------------------------------- the CLI

runner = CliRunner()


def test_cli_spaces_list():
    result = runner.invoke(cli.app, ["spaces", "list"])
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        assert name in result.output


@pytest.mark.parametrize("name", ["mlp", "mlp_small"])
def test_cli_spaces_show(name):
    result = runner.invoke(cli.app, ["spaces", "show", name])
    assert result.exit_code == 0, result.output
    assert "n_layers" in result.output and "learning_rate" in result.output
    assert "defaults" in result.output and "fixed" in result.output


def test_cli_spaces_validate_good_file(tmp_path):
    path = write_space(tmp_path, GOOD, name="good.yaml")
    result = runner.invoke(cli.app, ["spaces", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "tiny" in result.output


def _run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """cli.main() as the `autodl` script runs it: one-line errors and exit code 2."""
    saved_env = dict(os.environ)
    monkeypatch.setattr(sys, "argv", ["autodl", *args])
    capsys.readouterr()
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code
    else:
        code = 0
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", ["param_typo", "key_typo", "default_outside_range", "invalid_yaml"])
def test_cli_spaces_validate_bad_file(case, tmp_path, monkeypatch, capsys):
    text, needles = BAD_SPACES[case]
    path = write_space(tmp_path, text, name=f"bad_{case}.yaml")
    code, out, err = _run_main(monkeypatch, capsys, "spaces", "validate", str(path))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Fix:" in lines[0] and f"bad_{case}.yaml" in lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in out + err


def test_cli_spaces_validate_bad_file_with_runner(tmp_path):
    # Through CliRunner the error surfaces as the exception main() turns into one line.
    path = write_space(tmp_path, BAD_SPACES["key_typo"][0], name="typo.yaml")
    result = runner.invoke(cli.app, ["spaces", "validate", str(path)])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.exit_code == 2


def test_cli_spaces_show_unknown(monkeypatch, capsys):
    code, out, err = _run_main(monkeypatch, capsys, "spaces", "show", "mpl")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "did you mean 'mlp'" in err
