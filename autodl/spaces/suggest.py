"""Turn a SearchSpace into concrete parameters through an Optuna trial (or a defaults point)."""

from __future__ import annotations

from typing import Any

from autodl.spaces.schema import ParamSpec, SearchSpace


def suggest_params(trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every active parameter of `space` from `trial` (optuna.Trial or FixedTrial)."""
    values: dict[str, Any] = {}
    for param in space.params:
        if not _active(param, values):
            continue
        if param.per_layer:
            for i in range(int(values["n_layers"])):
                values[f"{param.name}_{i}"] = _suggest(trial, f"{param.name}_{i}", param)
        else:
            values[param.name] = _suggest(trial, param.name, param)
    return values


def defaults_point(space: SearchSpace) -> dict[str, Any]:
    """The space's `defaults` as Optuna parameter values (per-layer values expanded)."""
    return expand_point(space, space.defaults)


def warm_start_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The configurations tried first: the space's defaults, then its portfolio."""
    return [expand_point(space, point) for point in (space.defaults, *space.portfolio) if point]


def expand_point(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """A partial configuration as Optuna parameter values; parameters it omits are sampled."""
    point: dict[str, Any] = {}
    for param in space.params:
        if param.name not in values or not _active(param, point):
            continue
        value = values[param.name]
        if param.per_layer:
            if "n_layers" not in point:
                continue
            layers = int(point["n_layers"])
            per_layer = value if isinstance(value, list) else [value] * layers
            point.update({f"{param.name}_{i}": per_layer[min(i, len(per_layer) - 1)] for i in range(layers)})
        else:
            point[param.name] = value
    return point


def _active(param: ParamSpec, values: dict[str, Any]) -> bool:
    return all(values.get(name) == wanted for name, wanted in param.when.items())


def _suggest(trial, name: str, param: ParamSpec) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, list(param.choices))
    if param.type == "int":
        return trial.suggest_int(
            name, int(param.low), int(param.high), step=int(param.step or 1), log=param.log
        )
    return trial.suggest_float(name, float(param.low), float(param.high), step=param.step, log=param.log)
