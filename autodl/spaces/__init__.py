"""Declarative search spaces: YAML files in Optuna's distribution vocabulary."""

from autodl.spaces.schema import ParamSpec, SearchSpace, list_spaces, load_space

__all__ = ["ParamSpec", "SearchSpace", "list_spaces", "load_space"]
