"""Decide what each feature column is (numeric, categorical, datetime, text, ID-like, constant)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autodl.data.numbers import parse_numbers, writes_decimal_comma
from autodl.errors import DataError

MODELED_KINDS = ("numeric", "categorical", "datetime", "text", "frequency")
ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^id[_\W]|identifier", re.IGNORECASE)
# camelCase names: PassengerId, customerID (case-sensitive, so that "paid" or "valid" are not).
CAMEL_ID_NAME = re.compile(r"[a-z](Id|ID)$")
DATE_LIKE = re.compile(r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?")
TEXT_MIN_WORDS = 3.0
SAMPLE = 2000
# Cells that mean "no value" in numeric columns but that pandas does not read as missing.
PLACEHOLDERS = frozenset(
    {"?", "-", "--", ".", "missing", "unknown", "none", "null", "nil", "na", "n.a.", "#n/a", "#value!"}
)


@dataclass(frozen=True)
class ColumnProfile:
    """What autodl decided about one column, and why."""

    name: str
    kind: str
    reason: str
    n_unique: int
    n_missing: int

    @property
    def used(self) -> bool:
        return self.kind in MODELED_KINDS


@dataclass(frozen=True)
class TableProfile:
    """The profile of every feature column, in table order."""

    columns: tuple[ColumnProfile, ...]

    def names(self, kind: str) -> list[str]:
        return [column.name for column in self.columns if column.kind == kind]

    @property
    def used(self) -> list[str]:
        return [column.name for column in self.columns if column.used]

    @property
    def dropped(self) -> list[ColumnProfile]:
        return [column for column in self.columns if not column.used]


def profile_columns(features: pd.DataFrame) -> TableProfile:
    """Profile every column of `features`; raises DataError when none can be modeled."""
    profiles = tuple(_profile_column(str(name), features[name]) for name in features.columns)
    if not any(profile.used for profile in profiles):
        dropped = ", ".join(f"{p.name} ({p.kind})" for p in profiles) or "none"
        raise DataError(
            f"no usable feature columns: {dropped}",
            "check --target and --drop, or add feature columns to the file",
        )
    return TableProfile(profiles)


def _profile_column(name: str, values: pd.Series) -> ColumnProfile:
    n_missing = int(values.isna().sum())
    present = values.dropna()
    n_unique = int(present.nunique())

    def decided(kind: str, reason: str, placeholders: int = 0) -> ColumnProfile:
        return ColumnProfile(name, kind, reason, n_unique, n_missing + placeholders)

    if len(present) == 0:
        return decided("empty", "every value is missing")
    if n_unique == 1:
        return decided("constant", f"one distinct value ({present.iloc[0]!r})")
    if pd.api.types.is_bool_dtype(values):
        return decided("categorical", "true/false values")
    if pd.api.types.is_datetime64_any_dtype(values):
        return decided("datetime", "datetime values")
    if pd.api.types.is_numeric_dtype(values):
        return _profile_numeric(name, present, decided)
    return _profile_strings(name, present.astype(str), n_missing, decided)


def _profile_numeric(name, present: pd.Series, decided) -> ColumnProfile:
    all_unique = present.nunique() == len(present)
    numbers = present.to_numpy(dtype=float)
    integral = bool(np.all(np.isfinite(numbers)) and np.all(np.mod(numbers, 1) == 0))
    if all_unique and integral and len(present) >= 20:
        ordered = present.is_monotonic_increasing or present.is_monotonic_decreasing
        id_name = bool(ID_NAME.search(name) or CAMEL_ID_NAME.search(name))
        if id_name or ordered:
            why = "name looks like an identifier" if id_name else "values run in order"
            return decided("id", f"every value is a distinct integer and the {why}")
    return decided("numeric", f"numbers ({present.nunique()} distinct)")


def _profile_strings(name: str, present: pd.Series, n_missing: int, decided) -> ColumnProfile:
    sample = present.sample(min(SAMPLE, len(present)), random_state=0)
    n_unique = present.nunique()
    if sample.str.match(DATE_LIKE).mean() > 0.9:
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
        if parsed.notna().mean() > 0.9:
            return decided("datetime", "strings that parse as dates")
    decimal_comma = writes_decimal_comma(sample)
    numeric = parse_numbers(sample, decimal_comma)
    if numeric.notna().mean() > 0.98:
        return decided(
            "numeric", "strings that parse as numbers" + (" (decimal comma)" if decimal_comma else "")
        )
    tokens = sample[numeric.isna()].str.strip().str.lower()
    if numeric.notna().mean() >= 0.5 and tokens.isin(PLACEHOLDERS).all():
        # Numbers with placeholders such as '?': numeric, the placeholders are missing values
        # (the preprocessing reads every cell that is not a number as missing).
        placeholders = int(present.str.strip().str.lower().isin(PLACEHOLDERS).sum())
        shown = ", ".join(repr(t) for t in sorted(set(tokens))[:3])
        return decided(
            "numeric", f"numbers; {placeholders} placeholder cells ({shown}) read as missing", placeholders
        )
    mean_words = sample.str.split().str.len().mean()
    if mean_words >= TEXT_MIN_WORDS and n_unique > 0.5 * len(present):
        return decided(
            "text",
            f"free text (about {mean_words:.0f} words a value): word frequencies, reduced to a few numbers",
        )
    if n_unique > 0.5 * len(present) and len(present) >= 20:
        # Mostly unique labels cannot generalise as categories, but how many rows share a label
        # (a ticket's party, a cabin's family) or whether it is missing at all often does.
        if n_unique == len(present) and not n_missing:
            return decided("id", "every value is distinct, so it cannot generalise")
        gaps = f", {n_missing} missing" if n_missing else ""
        return decided(
            "frequency",
            f"{n_unique} distinct values in {len(present)} rows{gaps}: mostly unique labels, "
            "used only as how many rows share each value (0 if missing)",
        )
    return decided("categorical", f"labels ({n_unique} distinct)")


def check_features(features: pd.DataFrame, profile: TableProfile, rows: np.ndarray | None = None) -> None:
    """Raise DataError for columns that cannot be used as given: all-missing or infinite.

    `rows` maps each row of `features` to its 0-based data row in the file (for line numbers).
    """
    for column in profile.columns:
        if column.kind == "empty":
            raise DataError(
                f"column '{column.name}' has no values (every cell is missing)",
                f"remove the column from the file, or pass --drop '{column.name}'",
            )
    for name in profile.names("numeric"):
        values = features[name]
        if not pd.api.types.is_numeric_dtype(values):
            continue
        infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
        if infinite.any():
            found = np.flatnonzero(infinite)[:3]
            lines = ", ".join(str(int(i) + 2) for i in (found if rows is None else np.asarray(rows)[found]))
            raise DataError(
                f"column '{name}' has {int(infinite.sum())} infinite values (first at file line {lines})",
                f"replace them with empty cells or finite numbers, or pass --drop '{name}'",
            )
