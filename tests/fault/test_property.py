"""Property: on any small table, `autodl search` finishes with a leaderboard or exits with one of the
documented one-line errors; never a traceback, an internal error or a hang.

Hypothesis draws tables with random column kinds (numbers, integers, labels, booleans as text, dates,
numbers with missing markers or thousands separators, all-missing and constant columns), odd column
names (spaces, unicode, Python keywords, quotes, delimiters) and degenerate targets (constant, one
row per class, missing values, a single row). Each example runs in-process under a watchdog.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from cli_harness import assert_no_crash, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = [
    "x",
    "my col",
    "class",
    "lambda",
    "None",
    "température",
    "列名",
    "a,b",
    'q"uote',
    "1",
    " padded ",
    "id",
    "y.1",
    "sum(x)",
]
KINDS = [
    "float",
    "int",
    "labels",
    "bool_text",
    "dates",
    "mixed",
    "thousands",
    "all_missing",
    "constant",
    "unique_text",
]
TARGETS = ["binary", "multiclass", "regression", "int_classes", "constant", "one_per_class"]
FLAGS = [
    "--trials",
    "0",
    "--baselines",
    "dummy,linear",
    "--folds",
    "2",
    "--no-tracking",
    "--time-limit",
    "30",
]


def _column(kind: str, n: int, rng: np.random.Generator) -> list:
    if kind == "float":
        return list(rng.normal(size=n).round(3))
    if kind == "int":
        return list(rng.integers(-5, 50, n))
    if kind == "labels":
        return list(rng.choice(["a", "b", "c d", "é"], n))
    if kind == "bool_text":
        return list(rng.choice(["true", "false", "yes", "no", ""], n))
    if kind == "dates":
        days = rng.integers(0, 3000, n)
        return [str((pd.Timestamp("2015-01-01") + pd.Timedelta(days=int(d))).date()) for d in days]
    if kind == "mixed":
        return list(rng.choice(["12", "n/a", "3.5", "-7", ""], n))
    if kind == "thousands":
        return [f"{v:,}" for v in rng.integers(0, 3_000_000, n)]
    if kind == "all_missing":
        return [None] * n
    if kind == "constant":
        return ["same"] * n
    return [f"row {i} says {rng.integers(1e6)}" for i in range(n)]


def _target(kind: str, n: int, rng: np.random.Generator) -> list:
    if kind == "binary":
        return list(rng.choice(["no", "yes"], n))
    if kind == "multiclass":
        return list(rng.choice(["a", "b", "c"], n))
    if kind == "regression":
        return list(rng.normal(size=n).round(3))
    if kind == "int_classes":
        return list(rng.integers(0, 3, n))
    if kind == "constant":
        return [1] * n
    return [f"k{i}" for i in range(n)]


@st.composite
def tables(draw) -> pd.DataFrame:
    n = draw(st.sampled_from([1, 2, 3, 8, 20, 40, 60, 60, 60]))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    kinds = [draw(st.sampled_from(KINDS)) for _ in names]
    target = draw(st.sampled_from([*TARGETS, "binary", "regression"]))
    missing_share = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    target_missing = draw(st.sampled_from([0.0, 0.0, 0.0, 0.2, 1.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: _column(kind, n, rng) for name, kind in zip(names, kinds, strict=True)})
    for name in names:
        holes = rng.random(n) < missing_share
        frame[name] = frame[name].astype(object).where(~holes, None)
    y = pd.Series(_target(target, n, rng), dtype=object)
    frame["target"] = y.where(rng.random(n) >= target_missing, None)
    return frame


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=tables(), sep=st.sampled_from([",", ";", "\t"]))
def test_search_finishes_or_gives_a_documented_error(frame, sep, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / "table.csv"
    frame.to_csv(path, sep=sep, index=False)
    output = work / "out"
    outcome = run_cli("search", path, "--target", "target", *FLAGS, "--output", output, timeout=60)
    assert_no_crash(outcome)
    if outcome.code == 0:
        leaderboard = pd.read_csv(output / "leaderboard.csv")
        assert len(leaderboard) >= 1 and "linear" in set(leaderboard["candidate"]), leaderboard
        assert (output / "model" / "autodl-model.json").is_file()
        return
    assert outcome.code == 2, (outcome.code, outcome.stderr)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], outcome.stderr
