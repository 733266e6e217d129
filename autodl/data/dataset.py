"""Turn a raw table into a validated Dataset: features, encoded target, task and profile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autodl.data.numbers import parse_numbers, writes_decimal_comma
from autodl.data.profile import TableProfile, check_features, profile_columns
from autodl.data.task import TaskInfo, detect_task
from autodl.errors import DataError, closest


@dataclass(frozen=True)
class Dataset:
    """Validated features and target; `y` is the class index (classification) or a float."""

    features: pd.DataFrame
    target_name: str
    y: np.ndarray
    task: TaskInfo
    profile: TableProfile
    n_missing_target: int
    groups: np.ndarray | None = None  # group labels (--group-column), for splits that keep groups whole
    times: np.ndarray | None = None  # sortable times (--time-column), for time-ordered splits

    @property
    def n_rows(self) -> int:
        return len(self.features)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """Class labels for class indices (classification only)."""
        return np.asarray(self.task.classes, dtype=object)[indices]


def build_dataset(
    frame: pd.DataFrame,
    *,
    target: str,
    task: str | None = None,
    drop: tuple[str, ...] = (),
    folds: int = 5,
    test_size: float = 0.2,
    group_column: str | None = None,
    time_column: str | None = None,
) -> Dataset:
    """Validate `frame` for learning `target`; raises DataError naming the problem and the fix.

    `group_column` only decides the split (a group's rows stay together) and is not a feature;
    `time_column` orders the split and stays a feature.
    """
    _require_column(frame, target, "target", "--target")
    for name in drop:
        _require_column(frame, name, "--drop", "--drop")
    if target in drop:
        raise DataError(f"the target '{target}' is also in --drop", f"remove '{target}' from --drop")
    for name, flag in ((group_column, "--group-column"), (time_column, "--time-column")):
        if name is None:
            continue
        _require_column(frame, name, flag, flag)
        if name == target:
            raise DataError(f"{flag} '{name}' is the target", f"pass another column to {flag}")
        if name in drop:
            raise DataError(f"{flag} '{name}' is also in --drop", f"remove '{name}' from --drop")
    missing = frame[target].isna()
    kept_rows = np.flatnonzero(~missing.to_numpy())
    frame = frame.loc[~missing].reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(
            f"no rows left: every value of the target '{target}' is missing",
            "check --target; the target column must hold values",
        )
    needed = _rows_needed(folds, test_size)
    if len(frame) < needed:
        n = len(frame)
        dropped = f" ({int(missing.sum())} more have no target value)" if missing.any() else ""
        fits = [k for k in range(folds - 1, 1, -1) if _rows_needed(k, test_size) <= n]
        other = (
            f", or lower --folds (e.g. --folds {fits[0]})"
            if fits
            else (", or pass --folds 2 --test-size 0" if n >= 2 and test_size > 0 else "")
        )
        raise DataError(
            f"the table has only {n} row{'' if n == 1 else 's'} with a value of the target '{target}'"
            f"{dropped}, but {folds}-fold CV with a {test_size:.0%} test split needs at least {needed}",
            f"add data rows (a search needs dozens at least){other}",
        )
    target_values = _numbers_if_written_as_text(frame[target])
    if target_values.nunique() < 2:
        raise DataError(
            f"the target '{target}' is constant (every row is {_shown(target_values.iloc[0])}); there is nothing to learn",
            "check --target, or add rows of the other outcomes",
        )
    task_info = detect_task(target_values, task, min_class_rows=needed)
    if task_info.kind == "regression":
        y = pd.to_numeric(target_values, errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(y)):
            raise DataError(
                f"the target '{target}' has infinite values",
                "replace them with finite numbers or remove those rows",
            )
    else:
        index = {label: i for i, label in enumerate(task_info.classes)}
        y = target_values.map(index).to_numpy(dtype=np.int64)
        _check_class_sizes(target_values, folds, test_size, target)
    groups = None if group_column is None else _groups(frame[group_column], folds, test_size)
    times = None if time_column is None else _times(frame[time_column], kept_rows)
    features = frame.drop(columns=[target, *drop, *([group_column] if group_column else [])])
    profile = profile_columns(features)
    check_features(features, profile, rows=kept_rows)
    return Dataset(features, target, y, task_info, profile, int(missing.sum()), groups, times)


def _groups(column: pd.Series, folds: int, test_size: float) -> np.ndarray:
    """Group labels as integer codes; DataError for missing labels or too few groups to split."""
    name = column.name
    if column.isna().any():
        raise DataError(
            f"the group column '{name}' has {int(column.isna().sum())} missing values",
            "fill them (each distinct value is one group) or remove those rows",
        )
    codes, labels = pd.factorize(column)
    needed = folds + (max(1, round(1 / test_size) - 1) if test_size > 0 else 0)
    if len(labels) < needed:
        raise DataError(
            f"the group column '{name}' has {len(labels)} groups; {folds}-fold CV on whole groups"
            f"{' with a test split' if test_size > 0 else ''} needs at least {needed}",
            "lower --folds, or pass a column with more groups",
        )
    return codes


def _times(column: pd.Series, kept_rows: np.ndarray) -> np.ndarray:
    """Sortable times from numbers or dates; DataError for values that are neither."""
    name = column.name
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype(float)
    else:
        text = column.astype("string")
        # times without a zone are read as UTC: only their order matters
        stamps = pd.to_datetime(text, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
        values = stamps.astype("datetime64[ns]").astype("int64").astype(float).where(stamps.notna())
    bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        first, count = int(np.flatnonzero(bad)[0]), int(bad.sum())
        raise DataError(
            f"the time column '{name}' has {count} value{'s' if count > 1 else ''} that {'are' if count > 1 else 'is'} "
            f"not a number or date (first: {'an empty cell' if pd.isna(column.iloc[first]) else _shown(column.iloc[first])} at file line {int(kept_rows[first]) + 2})",
            "correct or remove those rows, or pass another --time-column",
        )
    return values.to_numpy(dtype=float)


def _numbers_if_written_as_text(values: pd.Series) -> pd.Series:
    """A text target whose every cell is a number with decorations ('$1,234', '4%', '3,5') as
    numbers; other targets as they are (labels such as '001' stay labels)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values
    if pd.to_numeric(values, errors="coerce").notna().all():
        return values
    parsed = parse_numbers(values, writes_decimal_comma(values))
    return parsed if parsed.notna().all() else values


def _require_column(frame: pd.DataFrame, name: str, what: str, flag: str) -> None:
    if name in frame.columns:
        return
    columns = [str(c) for c in frame.columns]
    glued = [sep for sep in ",;\t|" if any(name in column.split(sep) for column in columns)]
    if glued:  # the name is there, glued to others: the file was split at the wrong delimiter
        raise DataError(
            f"{what} column '{name}' not found: the header was read as {', '.join(map(repr, columns[:4]))}",
            f"pass the file's delimiter, e.g. --delimiter {glued[0]!r}",
        )
    near = closest(name, columns)
    hint = (
        f"did you mean {' or '.join(repr(n) for n in near)}?"
        if near
        else f"columns are: {', '.join(columns[:12])}"
    )
    raise DataError(
        f"{what} column '{name}' not found in the table", f"pass {flag} with a column name; {hint}"
    )


def _rows_needed(folds: int, test_size: float) -> int:
    """Rows (of each class, for classification) that a test split and `folds`-fold CV need."""
    return max(2, math.ceil(folds / (1 - test_size))) if test_size > 0 else folds


def _shown(value) -> str:
    """A value as the user wrote it: 3.5, not np.float64(3.5)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


# A target most of whose many labels are too rare for the split is no set of classes (dates, IDs,
# free text): naming one rare class, as for a single small class, would be no help.
MANY_CLASSES = 20
MAX_RARE_CLASS_SHARE = 0.5


def _check_class_sizes(labels: pd.Series, folds: int, test_size: float, target: str) -> None:
    counts = labels.value_counts()
    if counts.max() == 1:
        raise DataError(
            f"every value of the target '{target}' occurs in one row only ({len(counts)} classes of one "
            "row each), so no class can be learned",
            "check --target: a class needs several rows (this column looks like an identifier or free text)",
        )
    needed = _rows_needed(folds, test_size)
    rare = int((counts < needed).sum())
    if rare > MAX_RARE_CLASS_SHARE * len(counts) and len(counts) > MANY_CLASSES:
        raise DataError(
            f"{rare} of the {len(counts)} distinct values of the target '{target}' occur in fewer than "
            f"{needed} rows, too few to learn as classes",
            "check --target (an identifier, a date or free text cannot be classes; a number to "
            "predict must be stored as numbers), or merge the rare values into larger classes",
        )
    smallest = counts.idxmin()
    fewest = int(counts.min())
    if fewest < needed:
        fits = [k for k in range(folds - 1, 1, -1) if _rows_needed(k, test_size) <= fewest]
        if fits:
            lower = f"lower --folds (e.g. --folds {fits[0]}), "
        elif fewest >= 2 and test_size > 0:
            lower = "pass --folds 2 --test-size 0, "
        else:
            lower = ""
        raise DataError(
            f"class {_shown(smallest)} of '{target}' has {fewest} rows, but {folds}-fold CV with a "
            f"{test_size:.0%} test split needs at least {needed} rows of every class",
            f"{lower}add rows of class {_shown(smallest)}, or remove that class",
        )
