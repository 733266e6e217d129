"""A new local SQLite MLflow store started from a cached empty one instead of MLflow's migrations.

MLflow makes a new SQLite store by running its whole chain of schema migrations (~1.5 s on
this project's 2-core machine, measured against ~0.9 s to open an existing store), and
MLflow's default store is a file in the working folder: every search in a new folder pays it.
The first new store a version of MLflow makes is copied, with its experiments removed, into
the user's cache; a later new store starts as a copy of it, and MLflow, finding every table at
the schema version it expects, only adds its default experiment, as it does to a store it has
just made. MLflow still verifies the schema on every open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

_logger = logging.getLogger(__name__)

# The only rows a store MLflow has just made holds, besides its experiments.
SCHEMA_ROWS = frozenset({"alembic_version", "workspaces"})


def new_local_store(uri: str) -> Path | None:
    """The file of a `sqlite:///` store that does not exist yet, in a folder that does."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists() or not path.parent.is_dir():
        return None
    return path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/autodl, else ~/.cache/autodl."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autodl"


def template_path() -> Path:
    """The cached empty store for the installed MLflow and its exact set of migrations."""
    import mlflow
    import mlflow.store.db_migrations

    versions = Path(mlflow.store.db_migrations.__file__).parent / "versions"
    migrations = sorted(name for name in os.listdir(versions) if name.endswith(".py"))
    digest = hashlib.sha256("\n".join(migrations).encode()).hexdigest()[:12]
    return cache_dir() / f"mlflow-{mlflow.__version__}-{digest}.db"


def seed(path: Path) -> bool:
    """Start the new store `path` as a copy of the cached empty store; False if none is cached.

    A cached file that is not an empty store (damaged, or written to since) is removed, so the
    next new store made by MLflow replaces it.
    """
    template = template_path()
    if not template.is_file():
        return False
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(partial)) as copy:
            source.backup(copy)
            empty = _holds_only_schema(copy)
        if not empty:
            template.unlink(missing_ok=True)
            return False
        os.link(partial, path)  # never replaces a store another process has just made
    except FileExistsError:
        return False
    except (OSError, sqlite3.OperationalError) as error:  # e.g. a folder that cannot be written
        _logger.debug("no store copied from %s: %s", template, error)
        return False
    except sqlite3.DatabaseError as error:  # the cached file is not a database
        _logger.debug("removing %s: %s", template, error)
        template.unlink(missing_ok=True)
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def remember(path: Path) -> None:
    """Cache the store MLflow has just made at `path`, emptied of its experiments.

    Kept only if nothing else (another process's runs) had reached it; a cache that cannot be
    written is skipped, since the next new store then runs MLflow's migrations again.
    """
    template = template_path()
    if template.is_file():
        return
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=template.parent, suffix=".partial", delete=False) as handle:
            partial = Path(handle.name)
    except OSError as error:
        _logger.debug("no store cached in %s: %s", template.parent, error)
        return
    try:
        with closing(sqlite3.connect(path)) as store, closing(sqlite3.connect(partial)) as copy:
            store.backup(copy)
            with copy:
                copy.execute("DELETE FROM experiment_tags")
                copy.execute("DELETE FROM experiments")
            empty = _holds_only_schema(copy)
            if empty:
                copy.execute("VACUUM")
        if empty:
            os.replace(partial, template)
    except (OSError, sqlite3.Error) as error:
        _logger.debug("no store cached from %s: %s", path, error)
    finally:
        partial.unlink(missing_ok=True)


def _holds_only_schema(connection: sqlite3.Connection) -> bool:
    """A schema version and no rows but MLflow's own bookkeeping."""
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if (
        "alembic_version" not in tables
        or connection.execute("SELECT 1 FROM alembic_version").fetchone() is None
    ):
        return False
    return all(
        name in SCHEMA_ROWS or connection.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is None
        for name in tables
    )
