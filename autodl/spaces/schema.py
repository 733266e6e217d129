"""Load and validate search-space files; errors name the file, the key path and the fix."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autodl.errors import ConfigError, did_you_mean

TOP_KEYS = ("name", "description", "builder", "params", "fixed", "defaults", "portfolio")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "per_layer", "when")
TYPES = ("int", "float", "categorical")
FIXED_KEYS = ("max_epochs", "patience", "validation_fraction")
MLP_PARAMS = (
    "n_layers",
    "units",
    "activation",
    "dropout",
    "l1",
    "l2",
    "batch_norm",
    "optimizer",
    "weight_decay",
    "momentum",
    "nesterov",
    "learning_rate",
    "lr_schedule",
    "batch_size",
    "numeric_scaling",
)
# builder -> the parameters it understands; mlp_embeddings feeds categories through embeddings.
BUILDER_PARAMS = {"mlp": MLP_PARAMS, "mlp_embeddings": (*MLP_PARAMS, "embedding_size")}
FIXED_DEFAULTS = {"max_epochs": 200, "patience": 12, "validation_fraction": 0.15}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (1e-4), as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: an Optuna distribution, optionally one per hidden layer or conditional."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    per_layer: bool = False
    when: dict[str, Any] = field(default_factory=dict)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    """A validated space: searched params (in sampling order), fixed settings and a defaults point."""

    name: str
    builder: str
    params: tuple[ParamSpec, ...]
    fixed: dict[str, Any]
    defaults: dict[str, Any]
    portfolio: tuple[dict[str, Any], ...] = ()
    description: str = ""
    source: str = ""


def is_hypermodel_spec(space: str | Path) -> bool:
    """True for a Keras Tuner hypermodel reference 'module:attr' or 'file.py:attr'."""
    text = str(space)
    return ":" in text and not text.endswith((".yaml", ".yml"))


def spaces_folder():
    return resources.files("autodl.search_spaces")


def list_spaces() -> dict[str, str]:
    """Shipped space names and their descriptions."""
    found = {}
    for entry in sorted(spaces_folder().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = _parse(entry.read_text(), entry.name).description
    return found


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (e.g. "mlp") or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"search-space file not found: {path}", "check the path given to --space")
        return _parse(path.read_text(encoding="utf-8"), str(path))
    entry = spaces_folder() / f"{name_or_path}.yaml"
    if not entry.is_file():
        names = list(list_spaces())
        raise ConfigError(
            f"unknown search space {str(name_or_path)!r}{did_you_mean(str(name_or_path), names)}",
            f"use one of {', '.join(names)} or a path to a .yaml file",
        )
    return _parse(entry.read_text(), f"search_spaces/{entry.name}")


def _fail(source: str, where: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {problem}", fix)


def _parse(text: str, source: str) -> SearchSpace:
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(
            f"{source}: not valid YAML ({str(error).splitlines()[0]})", "fix the YAML syntax"
        ) from error
    if not isinstance(raw, dict):
        raise _fail(
            source,
            "top level",
            "expected a mapping of keys",
            f"start the file with keys among {', '.join(TOP_KEYS)}",
        )
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(
                source,
                str(key),
                f"unknown key {key!r}{did_you_mean(str(key), TOP_KEYS)}",
                f"use only {', '.join(TOP_KEYS)}",
            )
    builder = raw.get("builder", "mlp")
    if builder not in BUILDER_PARAMS:
        raise _fail(
            source,
            "builder",
            f"unknown builder {builder!r}",
            f"use one of {', '.join(BUILDER_PARAMS)}",
        )
    if not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise _fail(
            source,
            "params",
            "missing or empty",
            "declare at least one searched parameter under params:",
        )
    params = tuple(_parse_param(source, builder, name, spec) for name, spec in raw["params"].items())
    _check_order(source, params)
    fixed = _parse_fixed(source, raw.get("fixed") or {})
    defaults = raw.get("defaults") or {}
    _check_defaults(source, params, defaults, "defaults")
    portfolio = raw.get("portfolio") or []
    if not isinstance(portfolio, list):
        raise _fail(
            source, "portfolio", "expected a list of configurations", "write portfolio: [{n_layers: 3}, ...]"
        )
    for index, point in enumerate(portfolio):
        _check_defaults(source, params, point, f"portfolio[{index}]")
    return SearchSpace(
        name=str(raw.get("name", Path(source).stem)),
        builder=builder,
        params=params,
        fixed=fixed,
        defaults=dict(defaults),
        portfolio=tuple(dict(point) for point in portfolio),
        description=str(raw.get("description", "")).strip(),
        source=source,
    )


def _parse_param(source: str, builder: str, name: str, spec: Any) -> ParamSpec:
    where = f"params.{name}"
    known = BUILDER_PARAMS[builder]
    if name not in known:
        raise _fail(
            source,
            where,
            f"unknown parameter {name!r}{did_you_mean(name, known)}",
            f"the {builder} builder understands {', '.join(known)}",
        )
    if not isinstance(spec, dict):
        raise _fail(
            source,
            where,
            "expected a mapping such as {type: int, low: 1, high: 4}",
            "write the parameter as a mapping",
        )
    for key in spec:
        if key not in PARAM_KEYS:
            raise _fail(
                source,
                f"{where}.{key}",
                f"unknown key {key!r}{did_you_mean(str(key), PARAM_KEYS)}",
                f"use only {', '.join(PARAM_KEYS)}",
            )
    kind = spec.get("type")
    if kind not in TYPES:
        raise _fail(
            source,
            f"{where}.type",
            f"type must be one of {', '.join(TYPES)}, got {kind!r}",
            "set type: int, float or categorical",
        )
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise _fail(
            source,
            f"{where}.when",
            "expected a mapping {param: value}",
            "write when: {optimizer: sgd}",
        )
    common = {
        "name": name,
        "type": kind,
        "per_layer": bool(spec.get("per_layer", False)),
        "when": dict(when),
    }
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(
                source,
                f"{where}.choices",
                "a categorical parameter needs a non-empty list of choices",
                "write choices: [a, b]",
            )
        if name == "numeric_scaling":
            from autodl.preprocess import NUMERIC_SCALINGS

            unknown = [c for c in choices if c not in NUMERIC_SCALINGS]
            if unknown:
                raise _fail(
                    source,
                    f"{where}.choices",
                    f"unknown numeric scaling {unknown[0]!r}{did_you_mean(str(unknown[0]), NUMERIC_SCALINGS)}",
                    f"choose from {', '.join(NUMERIC_SCALINGS)}",
                )
        return ParamSpec(choices=tuple(choices), **common)
    low, high = spec.get("low"), spec.get("high")
    for key, value in (("low", low), ("high", high)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise _fail(
                source,
                f"{where}.{key}",
                f"{key} must be a number, got {value!r}",
                f"set {key}: to a number",
            )
    if low >= high:
        raise _fail(
            source,
            where,
            f"low ({low}) must be below high ({high})",
            "swap or correct low and high",
        )
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise _fail(
            source,
            f"{where}.low",
            f"log: true needs low > 0, got {low}",
            "raise low above 0 or set log: false",
        )
    step = spec.get("step")
    if step is not None and log:
        raise _fail(source, f"{where}.step", "step cannot be combined with log: true", "remove step or log")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise _fail(
            source,
            where,
            "an int parameter needs integer low and high",
            "use whole numbers or type: float",
        )
    if kind == "int":
        low, high = int(low), int(high)
    return ParamSpec(low=low, high=high, log=log, step=step, **common)


def _check_order(source: str, params: tuple[ParamSpec, ...]) -> None:
    seen: dict[str, ParamSpec] = {}
    for param in params:
        if param.per_layer and "n_layers" not in seen:
            raise _fail(
                source,
                f"params.{param.name}.per_layer",
                "per_layer needs n_layers declared above it",
                "declare n_layers first",
            )
        for other, value in param.when.items():
            if other not in seen:
                raise _fail(
                    source,
                    f"params.{param.name}.when",
                    f"condition on {other!r}, which is not declared above it",
                    f"declare {other} before {param.name}",
                )
            if not seen[other].contains(value):
                raise _fail(
                    source,
                    f"params.{param.name}.when",
                    f"{other} can never be {value!r}",
                    f"use a value of {other}'s range",
                )
        seen[param.name] = param


def _parse_fixed(source: str, fixed: Any) -> dict[str, Any]:
    if not isinstance(fixed, dict):
        raise _fail(source, "fixed", "expected a mapping", "write fixed: {max_epochs: 200}")
    for key in fixed:
        if key not in FIXED_KEYS:
            raise _fail(
                source,
                f"fixed.{key}",
                f"unknown key {key!r}{did_you_mean(str(key), FIXED_KEYS)}",
                f"use only {', '.join(FIXED_KEYS)}",
            )
    return {**FIXED_DEFAULTS, **fixed}


def _check_defaults(source: str, params: tuple[ParamSpec, ...], defaults: Any, where: str) -> None:
    if not isinstance(defaults, dict):
        raise _fail(source, where, "expected a mapping", "write a mapping such as {n_layers: 2}")
    by_name = {param.name: param for param in params}
    for key, value in defaults.items():
        if key not in by_name:
            raise _fail(
                source,
                f"{where}.{key}",
                f"unknown parameter {key!r}{did_you_mean(str(key), list(by_name))}",
                "give defaults only for declared params",
            )
        values = value if isinstance(value, list) and by_name[key].per_layer else [value]
        for item in values:
            if not by_name[key].contains(item):
                raise _fail(
                    source,
                    f"{where}.{key}",
                    f"{item!r} is outside the declared range",
                    "pick a default inside low..high or among the choices",
                )
