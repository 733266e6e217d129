"""Shared helpers: dataset manifest, the fixed benchmark split, metrics, machine description."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from autodl.events import Reporter

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT.parent / "shared" / "datasets" / "manifest.json"
RESULTS = Path(__file__).resolve().parent / "results"
TEST_SIZE = 0.25
SEED = 0


def load_manifest(path: Path = DEFAULT_MANIFEST) -> list[dict]:
    entries = json.loads(Path(path).read_text())
    for entry in entries:
        entry["path"] = str(Path(path).parent / entry["file"])
    return entries


def benchmark_split(frame: pd.DataFrame, target: str, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed 25% test split (stratified for classification, seed 0) every system is scored on."""
    stratify = frame[target] if task != "regression" else None
    train, test = train_test_split(frame, test_size=TEST_SIZE, random_state=SEED, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def score(task: str, y_true, prediction, classes=None) -> dict[str, float]:
    """Binary ROC AUC, multiclass log loss, regression RMSE, with accuracy / R² alongside."""
    if task == "regression":
        return {
            "rmse": float(skm.root_mean_squared_error(y_true, prediction)),
            "r2": float(skm.r2_score(y_true, prediction)),
        }
    proba = np.asarray(prediction, dtype=float)
    index = {label: i for i, label in enumerate(classes)}
    y = np.asarray([index[v] for v in y_true])
    accuracy = float(skm.accuracy_score(y, proba.argmax(axis=1)))
    if task == "binary":
        return {"roc_auc": float(skm.roc_auc_score(y, proba[:, 1])), "accuracy": accuracy}
    return {
        "log_loss": float(skm.log_loss(y, np.clip(proba, 1e-15, 1), labels=np.arange(len(classes)))),
        "accuracy": accuracy,
    }


def machine() -> dict:
    """Where and with what a result was measured."""
    versions = {}
    for name in (
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "optuna",
        "scikit-learn",
        "mlflow",
        "pandas",
        "numpy",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "commit": commit,
        "versions": versions,
    }


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def make_table(
    rows: int,
    *,
    numeric: int = 20,
    categorical: int = 2,
    levels: tuple[int, int] = (5, 20),
    missing: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A generated binary-classification table with a `target` column (0/1).

    The signal sits in the first 4 numeric columns (one interaction) and the first categorical
    column; the rest is noise. Categorical column j has between `levels[0]` and `levels[1]`
    labels ("c<j>_<k>"), drawn with Zipf-like frequencies so some labels are rare. With
    `missing` > 0, that share of the values of every other feature column is missing.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, numeric)).astype(np.float32)
    logit = np.zeros(rows)
    for i, weight in enumerate((1.2, -0.8, 0.6)[: max(0, numeric)]):
        logit += weight * x[:, i]
    if numeric >= 4:
        logit += 0.7 * x[:, 2] * x[:, 3]
    frame = pd.DataFrame(np.round(x, 4), columns=[f"x{i}" for i in range(numeric)])
    counts = np.linspace(levels[0], levels[1], num=max(categorical, 1)).round().astype(int)
    for j in range(categorical):
        k = int(counts[j])
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        codes = rng.choice(k, size=rows, p=weights / weights.sum())
        if j == 0:
            logit += rng.normal(0, 1.0, size=k)[codes]
        frame[f"c{j}"] = pd.Categorical.from_codes(codes, categories=[f"c{j}_{v}" for v in range(k)])
    probability = 1 / (1 + np.exp(-(logit - logit.mean())))
    frame["target"] = (rng.random(rows) < probability).astype(np.int64)
    if missing > 0:
        for name in list(frame.columns[:-1])[1::2]:
            frame.loc[rng.random(rows) < missing, name] = np.nan
    for j in range(categorical):  # plain strings, as read from a CSV
        frame[f"c{j}"] = frame[f"c{j}"].astype(object)
    return frame


def log_log_slope(sizes: list[float], seconds: list[float]) -> float | None:
    """Growth exponent b of seconds ~ size**b (least squares on logs); 1 means linear."""
    points = [(s, t) for s, t in zip(sizes, seconds, strict=True) if s > 0 and t and t > 0]
    if len(points) < 2:
        return None
    logs = np.log(np.asarray(points, dtype=float))
    return float(np.polyfit(logs[:, 0], logs[:, 1], 1)[0])


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class StageClock(Reporter):
    """An autodl Reporter that timestamps a search's progress events, to split its wall time.

    `stages()` gives seconds for: prepare (load, profile, split: up to the dataset event), setup
    (tracking start, run folder: up to the baselines phase), baselines, keras_setup (capacity
    check, Optuna study), keras (the trials), finalize (ensemble, test score, save, logging).
    """

    def __init__(self) -> None:
        self._now = time.perf_counter
        self.started = self._now()
        self.events: list[tuple[str, float]] = []

    def _mark(self, name: str) -> None:
        self.events.append((name, self._now()))

    def dataset(self, **_) -> None:
        self._mark("dataset")

    def phase(self, name, total, seconds_left) -> None:
        self._mark(f"phase:{name}")

    def outcome(self, outcome, *, best, seconds_left) -> None:
        self._mark(f"outcome:{outcome.family}")

    def finished(self, result, *, details) -> None:
        self._mark("finished")

    def stages(self, ended: float | None = None) -> dict[str, float]:
        ended = self._now() if ended is None else ended

        def last(prefix: str) -> float | None:
            times = [t for name, t in self.events if name.startswith(prefix)]
            return times[-1] if times else None

        marks = [
            ("prepare_s", last("dataset")),
            ("setup_s", last("phase:baselines") or last("dataset")),
            ("baselines_s", last("outcome:baseline")),
            ("keras_setup_s", last("phase:keras")),
            ("keras_s", last("outcome:keras")),
            ("finalize_s", ended),
        ]
        stages, previous = {}, self.started
        for name, moment in marks:
            moment = previous if moment is None else moment
            stages[name] = round(max(0.0, moment - previous), 3)
            previous = moment
        return stages
