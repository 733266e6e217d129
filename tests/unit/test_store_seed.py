"""A new local MLflow store starts from a cached empty store instead of MLflow's migrations."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import mlflow
import mlflow.store.db.utils
import pandas as pd
import pytest

from autodl.tracking import store_seed
from autodl.tracking.mlflow import MlflowTracker

SUMMARY = {"task": "binary", "metric": "roc_auc", "target": "y", "rows": 4, "columns": 2}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "autodl"


def _search_run(database: Path) -> MlflowTracker:
    database.parent.mkdir(exist_ok=True)
    tracker = MlflowTracker(uri=f"sqlite:///{database}", experiment="seeded", run_name="search")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    tracker.start(config={"folds": 2, "test_size": 0.0}, summary=SUMMARY, data=frame, source="frame")
    tracker.abort("FINISHED", "test over")
    return tracker


def _schema(database: Path) -> list[tuple]:
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_a_second_new_store_is_copied_from_the_cache_and_not_migrated(tmp_path, monkeypatch, empty_cache):
    first = _search_run(tmp_path / "first" / "mlflow.db")
    assert [path.suffix for path in empty_cache.iterdir()] == [
        ".db"
    ]  # the cache holds one store, no partial file

    def migrations(engine):
        raise AssertionError("MLflow ran its migrations on a store copied from the cache")

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", migrations)
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "second")
    second = _search_run(tmp_path / "second" / "mlflow.db")

    assert _schema(tmp_path / "second" / "mlflow.db") == _schema(tmp_path / "first" / "mlflow.db")
    client = mlflow.MlflowClient(second.uri)
    assert client.get_run(second.run_id).info.status == "FINISHED"
    assert [e.name for e in client.search_experiments(order_by=["name"])] == ["Default", "seeded"]
    default = client.get_experiment("0").artifact_location  # made now, for this folder, as MLflow does
    assert Path(default.removeprefix("file://")) == tmp_path / "second" / "mlruns" / "0"
    assert [p.name for p in (tmp_path / "second").iterdir() if p.name.endswith(".partial")] == []
    assert len(mlflow.MlflowClient(first.uri).search_runs(["1"])) == 1  # the first store kept its run


def test_a_store_holding_runs_is_not_cached(tmp_path, empty_cache):
    database = tmp_path / "used" / "mlflow.db"
    _search_run(database)
    for template in empty_cache.iterdir():
        template.unlink()
    store_seed.remember(database)  # the store now holds a run: it is no empty template
    assert list(empty_cache.iterdir()) == []


def test_only_a_local_sqlite_file_that_does_not_exist_yet_is_seeded(tmp_path):
    existing = tmp_path / "existing.db"
    existing.write_text("not a store")
    assert store_seed.new_local_store(f"sqlite:///{tmp_path / 'new.db'}") == tmp_path / "new.db"
    assert store_seed.new_local_store(f"sqlite:///{existing}") is None
    assert store_seed.new_local_store(f"sqlite:///{tmp_path / 'no' / 'folder.db'}") is None
    assert store_seed.new_local_store("sqlite://") is None
    assert store_seed.new_local_store(f"sqlite:///{tmp_path / 'new.db'}?mode=ro") is None
    assert store_seed.new_local_store("http://127.0.0.1:5000") is None


def test_a_cache_that_cannot_be_written_leaves_the_search_tracked(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    tracker = _search_run(tmp_path / "run" / "mlflow.db")
    assert mlflow.MlflowClient(tracker.uri).get_run(tracker.run_id).info.status == "FINISHED"
    assert blocked.read_text() == ""


@pytest.mark.parametrize("damage", ["holds a run", "is not a database"])
def test_a_cached_file_that_is_not_an_empty_store_is_removed_and_not_copied(tmp_path, empty_cache, damage):
    _search_run(tmp_path / "first" / "mlflow.db")
    (template,) = empty_cache.iterdir()
    if damage == "holds a run":
        with closing(sqlite3.connect(template)) as connection, connection:
            connection.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('stale', 'active')")
    else:
        template.write_bytes(b"not a database" * 100)
    new = tmp_path / "second" / "mlflow.db"
    new.parent.mkdir()
    assert store_seed.seed(new) is False
    assert not new.exists() and not template.exists()
    tracker = _search_run(new)  # MLflow makes the store, which is cached again
    assert [e.name for e in mlflow.MlflowClient(tracker.uri).search_experiments(order_by=["name"])] == [
        "Default",
        "seeded",
    ]
    assert template.is_file()
