"""Numbers written as text: '1,234.5', '1.234,5' (decimal comma), '$12', '4.5 %'.

The profile decides with these whether a text column is numeric, and the preprocessing reads
its cells with them, so both agree on what a cell means.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Currency and percent signs; the number is kept as written ("4.5%" is 4.5).
SIGNS = re.compile(r"[$€£¥%]")
# A space (also no-break or thin) that groups digits in threes: "1 234 567".
GROUPING_SPACE = re.compile(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(\D|$))")
# "1,234" or "12,345,678.9": a comma before every group of three digits, no leading zero.
THOUSANDS_COMMA = re.compile(r"^[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?$")
# "0,5", "12,75", "1.234,5": a comma before the fraction, optionally dots grouping thousands.
DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+$")


def undecorated(text: pd.Series) -> pd.Series:
    """The cells without currency or percent signs, outer spaces and digit-grouping spaces."""
    cells = text.astype(str).str.replace(SIGNS, "", regex=True).str.strip()
    return cells.str.replace(GROUPING_SPACE, "", regex=True)


def writes_decimal_comma(text: pd.Series) -> bool:
    """Whether a column of number strings uses a comma before the fraction ('3,5').

    Some cell must be a decimal-comma number that cannot be a thousands-grouped one ('0,5',
    '12,75'), and none may be only a thousands-grouped one ('1,234.5', '1,234,567').
    """
    cells = undecorated(text.dropna())
    decimal = cells.str.match(DECIMAL_COMMA)
    thousands = cells.str.match(THOUSANDS_COMMA)
    return bool((decimal & ~thousands).any() and not (thousands & ~decimal).any())


def parse_numbers(values: pd.Series, decimal_comma: bool) -> pd.Series:
    """`values` as floats; cells that are not numbers (and missing cells) become NaN."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(values.to_numpy(dtype=float, na_value=np.nan), index=values.index)
    present = values.astype(object).where(values.notna(), None)
    cells = undecorated(present)
    if decimal_comma:
        cells = cells.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        cells = cells.str.replace(",", "", regex=False)
    numbers = pd.to_numeric(cells.where(present.notna(), None), errors="coerce")
    return pd.Series(numbers.to_numpy(dtype=float, na_value=np.nan), index=values.index)
