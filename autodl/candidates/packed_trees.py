"""Tree ensembles as the baselines use them: saved packed; HistGradientBoosting also fitted in
steps when watched.

Fitting in steps (`fit(..., on_progress=...)`) lets a time guard stop a fit that would run far
past the time limit: with 100 classes, the defaults' 100 iterations grow 10,000 trees, ~20 s a
fold on 1,600 rows. The steps are warm starts, so the model is the one a single fit grows.

Saved state: the trees are saved as a few arrays, not three per tree.

A fitted HistGradientBoosting keeps each tree as a `TreePredictor` of three arrays; skops writes
each array as its own file in the archive, at a fixed cost per file (~0.2 ms, plus the schema
entry): five fold models of a 3-class, 600-iteration model hold 27,000 of them, which took
~10 s to write. These subclasses change nothing but their saved state:
all trees' nodes in one array and the category bitsets in two, rebuilt into the same
`TreePredictor`s on load, so predictions are identical.

Forests likewise: each of their 300 trees is a fitted DecisionTree whose `Tree` skops writes
as two arrays beside the tree's own attributes, ~1,500 files and schema entries for one fold
model; writing one fold of the extra trees on 3,000 rows took ~0.3 s and loading it ~0.5 s,
GIL-bound Python either way. Packed, the trees are one node array and one value array, and
the attributes the trees share are stored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.tree._tree import Tree

PACKED = "_packed_predictors"
PACKED_FOREST = "_packed_trees"


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


def pack_forest(trees: list) -> dict[str, Any] | None:
    """A forest's fitted trees as a few arrays and the attributes they share; None when their
    attributes differ in more than `random_state` (then they are saved as they are)."""
    first = trees[0]
    shared = {k: v for k, v in first.__getstate__().items() if k not in ("tree_", "random_state")}
    shape = _tree_shape(first)
    for tree in trees[1:]:
        state = tree.__getstate__()
        if type(tree) is not type(first) or state.keys() != {*shared, "tree_", "random_state"}:
            return None
        if not all(_same(state[k], v) for k, v in shared.items()):
            return None
        if not all(_same(a, b) for a, b in zip(_tree_shape(tree), shape, strict=True)):
            return None
    states = [tree.tree_.__getstate__() for tree in trees]
    return {
        "tree_class": first.__class__.__name__,
        "shared": shared,
        "random_states": [tree.random_state for tree in trees],
        "n_features": int(shape[0]),
        "n_classes": np.asarray(shape[1]),
        "n_outputs": int(shape[2]),
        "max_depths": np.array([s["max_depth"] for s in states], dtype=np.int64),
        "node_counts": np.array([s["node_count"] for s in states], dtype=np.int64),
        "nodes": _concatenate([s["nodes"] for s in states]),
        "values": _concatenate([s["values"] for s in states]),
    }


def _tree_shape(tree) -> tuple[int, np.ndarray, int]:
    """What a `Tree` is constructed with: features, classes per output, outputs."""
    return tree.tree_.n_features, tree.tree_.n_classes, tree.tree_.n_outputs


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays one after another, in the first one's dtype: `np.concatenate` gives the node
    records a packed dtype field by field, ~0.2 s for 300 trees, where this is a copy."""
    out = np.empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    start = 0
    for array in arrays:
        out[start : start + len(array)] = array
        start += len(array)
    return out


def unpack_forest(packed: dict[str, Any], tree_class: type) -> list:
    """The fitted trees that `pack_forest` packed, as instances of `tree_class`."""
    if tree_class.__name__ != packed["tree_class"]:
        raise ValueError(f"packed trees are {packed['tree_class']}, not {tree_class.__name__}")
    ends = np.cumsum(packed["node_counts"])[:-1]
    trees = []
    for nodes, values, depth, count, seed in zip(
        np.split(packed["nodes"], ends),
        np.split(packed["values"], ends),
        packed["max_depths"],
        packed["node_counts"],
        packed["random_states"],
        strict=True,
    ):
        structure = Tree(
            packed["n_features"], np.array(packed["n_classes"], dtype=np.intp), packed["n_outputs"]
        )
        structure.__setstate__(
            {"max_depth": int(depth), "node_count": int(count), "nodes": nodes, "values": values}
        )
        tree = tree_class.__new__(tree_class)
        tree.__setstate__({**packed["shared"], "random_state": seed, "tree_": structure})
        trees.append(tree)
    return trees


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    return type(a) is type(b) and a == b


class _PackedForestState:
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if state.get("estimators_"):
            packed = pack_forest(state["estimators_"])
            if packed is not None:
                del state["estimators_"]
                state[PACKED_FOREST] = packed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        packed = state.pop(PACKED_FOREST, None)
        if packed is not None:
            state["estimators_"] = unpack_forest(packed, type(state["estimator_"]))
        super().__setstate__(state)


class PackedRandomForestClassifier(_PackedForestState, RandomForestClassifier):
    """RandomForestClassifier saved with its trees packed (see the module docstring)."""


class PackedRandomForestRegressor(_PackedForestState, RandomForestRegressor):
    """RandomForestRegressor saved with its trees packed (see the module docstring)."""


class PackedExtraTreesClassifier(_PackedForestState, ExtraTreesClassifier):
    """ExtraTreesClassifier saved with its trees packed (see the module docstring)."""


class PackedExtraTreesRegressor(_PackedForestState, ExtraTreesRegressor):
    """ExtraTreesRegressor saved with its trees packed (see the module docstring)."""


FIRST_STEP_ITERATIONS = 10
MIN_STEP_SECONDS = 2.0  # later steps last about as long as all steps before them, at least this


class _FitInSteps:
    def fit(self, X, y, sample_weight=None, *, on_progress: Callable[[float | None], None] | None = None):
        """Fit as HistGradientBoosting does; with `on_progress`, in warm-started steps of
        iterations, calling `on_progress(share)` after each step but the last, where `share` is
        the part of `max_iter` done (None when early stopping may end the fit sooner). It may
        raise to stop the fit."""
        if on_progress is None or self.warm_start:
            return super().fit(X, y, sample_weight)
        max_iter = self.max_iter
        started = time.perf_counter()
        try:
            self.warm_start, self.max_iter = True, min(FIRST_STEP_ITERATIONS, max_iter)
            while True:
                super().fit(X, y, sample_weight)
                if self.n_iter_ >= max_iter or self.n_iter_ < self.max_iter or self._stops_early_now():
                    return self
                on_progress(None if self.do_early_stopping_ else self.n_iter_ / max_iter)
                elapsed = time.perf_counter() - started
                more = max(elapsed, MIN_STEP_SECONDS) / (elapsed / self.n_iter_)
                self.max_iter = min(max_iter, self.n_iter_ + max(FIRST_STEP_ITERATIONS, int(more)))
        finally:
            self.warm_start, self.max_iter = False, max_iter

    def _stops_early_now(self) -> bool:
        """Whether early stopping ended the last step just as it reached its `max_iter` (the next
        step would not see it: a single fit would have stopped here)."""
        if not self.do_early_stopping_:
            return False
        scores = self.validation_score_ if self._use_validation_data else self.train_score_
        return bool(self._should_stop(list(scores)))


class PackedHistGradientBoostingClassifier(_FitInSteps, _PackedTreesState, HistGradientBoostingClassifier):
    """HistGradientBoostingClassifier, fitted in steps when watched and saved with its trees
    packed (see the module docstring)."""


class PackedHistGradientBoostingRegressor(_FitInSteps, _PackedTreesState, HistGradientBoostingRegressor):
    """HistGradientBoostingRegressor, fitted in steps when watched and saved with its trees
    packed (see the module docstring)."""
