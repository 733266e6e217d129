"""Shared helpers: dataset manifest, the fixed benchmark split, metrics, machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

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
