"""HistGradientBoosting whose fitted trees are saved as a few arrays, not three per tree.

A fitted HistGradientBoosting keeps each tree as a `TreePredictor` of three arrays; skops writes
each array as its own file in the archive, at a fixed cost per file (~0.2 ms, plus the schema
entry): five fold models of a 3-class, 600-iteration model hold 27,000 of them, which took
~10 s to write. These subclasses change nothing but their saved state:
all trees' nodes in one array and the category bitsets in two, rebuilt into the same
`TreePredictor`s on load, so predictions are identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

PACKED = "_packed_predictors"


def pack_trees(trees: list[list[TreePredictor]]) -> dict[str, Any]:
    """The trees of every iteration (one per class, or one) as a few concatenated arrays."""
    flat = [tree for iteration in trees for tree in iteration]
    return {
        "trees_per_iteration": len(trees[0]),
        "nodes": np.concatenate([tree.nodes for tree in flat]),
        "node_counts": np.array([len(tree.nodes) for tree in flat], dtype=np.int64),
        "binned_bitsets": np.concatenate([tree.binned_left_cat_bitsets for tree in flat]),
        "raw_bitsets": np.concatenate([tree.raw_left_cat_bitsets for tree in flat]),
        "bitset_counts": np.array([len(tree.raw_left_cat_bitsets) for tree in flat], dtype=np.int64),
    }


def unpack_trees(packed: dict[str, Any]) -> list[list[TreePredictor]]:
    """The per-iteration lists of `TreePredictor` that `pack_trees` packed."""
    node_ends = np.cumsum(packed["node_counts"])[:-1]
    bitset_ends = np.cumsum(packed["bitset_counts"])[:-1]
    flat = [
        TreePredictor(nodes, binned, raw)
        for nodes, binned, raw in zip(
            np.split(packed["nodes"], node_ends),
            np.split(packed["binned_bitsets"], bitset_ends),
            np.split(packed["raw_bitsets"], bitset_ends),
            strict=True,
        )
    ]
    step = packed["trees_per_iteration"]
    return [flat[start : start + step] for start in range(0, len(flat), step)]


class _PackedTreesState:
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if state.get("_predictors"):  # fitted
            state[PACKED] = pack_trees(state.pop("_predictors"))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        packed = state.pop(PACKED, None)
        if packed is not None:
            state["_predictors"] = unpack_trees(packed)
        super().__setstate__(state)


class PackedHistGradientBoostingClassifier(_PackedTreesState, HistGradientBoostingClassifier):
    """HistGradientBoostingClassifier, saved with its trees packed (see the module docstring)."""


class PackedHistGradientBoostingRegressor(_PackedTreesState, HistGradientBoostingRegressor):
    """HistGradientBoostingRegressor, saved with its trees packed (see the module docstring)."""
