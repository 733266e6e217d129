"""Read a CSV (plain or compressed) or Parquet file into a DataFrame, with clear errors."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from autodl.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# Memory a search needs per byte of file, measured loosely: pandas' frame, the per-fold
# preprocessed copies of the fold towers, and the models. Compressed files expand first.
MEMORY_PER_FILE_BYTE = 12
EXPANSION = {".gz": 5, ".parquet": 5, ".pq": 5}
MANGLED = re.compile(r"\.\d+$")  # how pandas renames a repeated column name


def read_table(path: str | Path, *, delimiter: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read `path` (CSV, CSV.gz or Parquet) into a DataFrame.

    The CSV delimiter is sniffed from the first 64 KiB unless given. Raises DataError for a
    missing, empty, unreadable or undecodable file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}", "check the path (it is relative to the current folder)")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file", "pass the path of a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes)", "pass a file with a header row and data rows")
    check_memory(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    return _read_csv(path, delimiter=delimiter, encoding=encoding)


def check_memory(path: Path, available: int | None = None) -> None:
    """DataError when the table clearly cannot be searched in the memory this machine has free,
    before reading it (an out-of-memory kill would lose the work instead)."""
    available = available if available is not None else _available_memory()
    if available is None:
        return
    needed = path.stat().st_size * EXPANSION.get(path.suffix.lower(), 1) * MEMORY_PER_FILE_BYTE
    if needed > available:
        raise DataError(
            f"{path} ({path.stat().st_size / 2**30:.1f} GiB on disk) needs about {needed / 2**30:.0f} GiB of "
            f"memory to search, but {available / 2**30:.1f} GiB are free",
            "search a random sample of the rows (e.g. with pandas .sample), or use a machine with more memory",
        )


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(
            f"cannot read {path} as Parquet ({_first_line(error)})",
            "check that the file is a valid Parquet file, or save it as CSV",
        ) from error
    return _require_rows(frame, path)


def _read_csv(path: Path, *, delimiter: str | None, encoding: str) -> pd.DataFrame:
    head = _read_head(path)
    text_encoding = _check_encoding(path, head, encoding)
    if not head.strip():
        raise DataError(f"{path} holds only blank lines", "pass a file with a header row and data rows")
    sep = delimiter or _sniff_delimiter(head.decode(text_encoding, errors="replace"))
    try:
        frame = pd.read_csv(path, sep=sep, encoding=text_encoding, low_memory=False, compression="infer")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not valid {encoding} text (undecodable byte at position {error.start})",
            "re-save the file as UTF-8, or pass --encoding latin-1 (or the file's real encoding)",
        ) from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path} has no columns", "pass a file with a header row and data rows") from error
    except (pd.errors.ParserError, ValueError, OSError) as error:
        raise DataError(
            f"cannot parse {path} as CSV with delimiter {sep!r} ({_first_line(error)})",
            "check the file, or pass the delimiter with --delimiter ';'",
        ) from error
    _check_duplicate_names(path, frame, sep=sep, encoding=text_encoding)
    if frame.shape[1] == 1 and delimiter is None:
        header = str(frame.columns[0])
        other = [d for d in DELIMITERS if d != sep and d in header]
        if other:
            raise DataError(
                f"{path} was read as one column; its header contains {other[0]!r}",
                f"pass --delimiter {other[0]!r}",
            )
    return _require_rows(frame, path)


def _check_duplicate_names(path: Path, frame: pd.DataFrame, *, sep: str, encoding: str) -> None:
    """DataError when the header repeats a column name (pandas would silently rename 'a' to 'a.1')."""
    if len(sep) != 1 or not any(MANGLED.search(str(column)) for column in frame.columns):
        return  # pandas names every copy after the first 'name.N': without one there is no duplicate
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding=encoding, newline="") as handle:
            header = next((row for row in csv.reader(handle, delimiter=sep) if row), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return  # pandas read the file; a header the csv module cannot read is left to pandas
    counts = Counter(name for name in header if name.strip())
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        first = repeated[0]
        shown = ", ".join(f"{name!r} ({counts[name]} times)" for name in repeated[:5])
        raise DataError(
            f"the header of {path} repeats column name(s) {shown}",
            f"rename the copies so that every column name is unique (e.g. '{first}_2')",
        )


def _read_head(path: Path) -> bytes:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(SNIFF_BYTES)
    except (OSError, EOFError) as error:
        raise DataError(
            f"cannot read {path} ({_first_line(error)})", "check the file's permissions and format"
        ) from error


def _check_encoding(path: Path, head: bytes, encoding: str) -> str:
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        encoding = "utf-8-sig"  # tolerates a byte-order mark
    try:
        io.TextIOWrapper(io.BytesIO(head), encoding=encoding).read()
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sample is not an error.
        if error.start < len(head) - 4:
            raise DataError(
                f"{path} is not valid {encoding.removesuffix('-sig')} text (undecodable byte at position {error.start})",
                "re-save the file as UTF-8, or pass --encoding latin-1 (or the file's real encoding)",
            ) from error
    except LookupError as error:
        raise DataError(
            f"unknown encoding {encoding!r}", "pass a Python codec name such as utf-8 or latin-1"
        ) from error
    return encoding


def _sniff_delimiter(sample: str) -> str:
    lines = sample.splitlines()
    if len(lines) > 1 and not sample.endswith("\n"):
        lines = lines[:-1]  # the last line may be cut mid-row
    try:
        return csv.Sniffer().sniff("\n".join(lines[:200]), delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _require_rows(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame.shape[1] == 0:
        raise DataError(f"{path} has no columns", "pass a file with a header row and data rows")
    if len(frame) == 0:
        raise DataError(
            f"{path} has a header but no data rows", "pass a file with data rows under the header"
        )
    frame.columns = [str(column) for column in frame.columns]
    repeated = sorted(name for name, count in Counter(frame.columns).items() if count > 1)
    if repeated:  # a Parquet file may hold the same name twice, or both 1 and '1'
        raise DataError(
            f"{path} has more than one column named {', '.join(repr(name) for name in repeated[:5])}",
            f"rename the copies so that every column name is unique (e.g. '{repeated[0]}_2')",
        )
    return frame


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
