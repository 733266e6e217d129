"""Detect the learning task from the target column, with the rule that decided it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autodl.errors import DataError

MAX_CLASSES_FOR_INTEGERS = 20
MAX_CLASS_SHARE_OF_ROWS = 0.05


@dataclass(frozen=True)
class TaskInfo:
    """The task, why it was chosen, and the class labels in a stable order."""

    kind: str
    reason: str
    classes: tuple | None = None

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0


def detect_task(target: pd.Series, override: str | None = None, min_class_rows: int = 1) -> TaskInfo:
    """Infer binary, multiclass or regression from the target's values (or apply `override`).

    Integers with a value too rare for a class (fewer than `min_class_rows` rows, what the
    split needs of every class) are counts or scores, so regression."""
    values = target.dropna()
    n_unique = values.nunique()
    if override is not None:
        return _forced(values, override, n_unique)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        kind = "binary" if n_unique == 2 else "multiclass"
        return TaskInfo(kind, f"the target holds {n_unique} distinct labels", _classes(values))
    numbers = values.to_numpy(dtype=float)
    integral = bool(np.all(np.isfinite(numbers)) and np.all(np.mod(numbers, 1) == 0))
    if not integral:
        return TaskInfo("regression", "the target holds non-integer numbers")
    if n_unique == 2:
        return TaskInfo("binary", "the target holds two distinct values", _classes(values))
    if n_unique <= MAX_CLASSES_FOR_INTEGERS and n_unique <= MAX_CLASS_SHARE_OF_ROWS * len(values):
        counts = values.value_counts()
        if counts.min() < min_class_rows:
            return TaskInfo(
                "regression",
                f"the target holds {n_unique} distinct integers, and {int(counts.idxmin())} occurs in "
                f"{counts.min()} row{'' if counts.min() == 1 else 's'}, too few to be a class",
            )
        return TaskInfo(
            "multiclass",
            f"the target holds {n_unique} distinct integers, few for {len(values)} rows",
            _classes(values),
        )
    return TaskInfo("regression", f"the target holds {n_unique} distinct integers, too many to be classes")


def _forced(values: pd.Series, kind: str, n_unique: int) -> TaskInfo:
    if kind == "regression":
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.isna().any():
                raise DataError(
                    "--task regression needs a numeric target, but it holds labels such as "
                    f"{values[numeric.isna()].iloc[0]!r}",
                    "drop --task to classify, or convert the target to numbers",
                )
        return TaskInfo("regression", "set by --task")
    if kind == "binary" and n_unique != 2:
        raise DataError(
            f"--task binary needs exactly two target values, found {n_unique}",
            "use --task multiclass, or drop --task to detect the task",
        )
    return TaskInfo(kind, "set by --task", _classes(values))


def _classes(values: pd.Series) -> tuple:
    uniques = pd.unique(values)
    try:
        return tuple(sorted(uniques.tolist()))
    except TypeError:  # mixed types: order by text
        return tuple(sorted(uniques.tolist(), key=str))
