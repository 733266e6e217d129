"""Shared fixtures: quiet, deterministic, and never writing into the user's working directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path, tmp_path_factory, monkeypatch):
    """Run each test in a temporary folder with a temporary MLflow store and fixed seeds; the
    temporary files made in this process (MLflow's model downloads) and autodl's cache go to
    pytest's folders too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tempfiles")))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))  # not the user's
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    np.random.seed(0)
    return tmp_path


@pytest.fixture
def titanic() -> pd.DataFrame:
    return pd.read_csv(EXAMPLES / "titanic.csv")


@pytest.fixture
def titanic_csv() -> Path:
    return EXAMPLES / "titanic.csv"


@pytest.fixture
def wage_csv() -> Path:
    return EXAMPLES / "wage.csv"


@pytest.fixture
def penguins_csv() -> Path:
    return EXAMPLES / "penguins.csv"
