"""autodl: AutoML for deep learning on tabular data.

    from autodl import AutoDLClassifier, AutoDLRegressor, search
    result = search("data.csv", target="price", time_limit=300)
    result.leaderboard

Heavy libraries (TensorFlow, MLflow) load only when a search or a model needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "AutoDLClassifier",
    "AutoDLRegressor",
    "SearchConfig",
    "SearchResult",
    "load_model",
    "search",
]

_LAZY = {
    "AutoDLClassifier": "autodl.api",
    "AutoDLRegressor": "autodl.api",
    "search": "autodl.api",
    "load_model": "autodl.api",
    "SearchConfig": "autodl.config",
    "SearchResult": "autodl.result",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autodl' has no attribute {name!r}")
