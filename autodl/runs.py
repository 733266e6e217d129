"""Past searches in an MLflow tracking store: `autodl runs` (alias `autodl leaderboard`).

Reads only the parent runs that autodl search logged (tag autodl.role = 'search'); imports MLflow
but never TensorFlow, so listing stays quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from autodl.errors import ConfigError, did_you_mean

SEARCH_FILTER = "tags.`autodl.role` = 'search'"


@dataclass
class PastSearch:
    """One search as its parent run records it."""

    run_id: str
    run_name: str
    experiment: str
    started: datetime | None
    status: str
    task: str
    metric: str
    cv_score: float | None
    test_score: float | None
    final_model: str
    interrupted: bool
    model_uri: str

    @property
    def state(self) -> str:
        if self.status == "FINISHED" and self.interrupted:
            return "FINISHED (interrupted)"
        return self.status


def list_searches(
    *, tracking_uri: str | None = None, experiment: str | None = None, limit: int = 20
) -> tuple[str, list[PastSearch]]:
    """The store's URI and its most recent searches, newest first (one experiment or all)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from autodl.tracking.mlflow import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    try:
        experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    except Exception as error:
        raise ConfigError(
            f"cannot read the MLflow store {_redact(uri)} ({str(error).splitlines()[0][:200]})",
            "check --tracking-uri (or MLFLOW_TRACKING_URI), and that the server is running",
        ) from error
    names = {e.experiment_id: e.name for e in experiments}
    if experiment is not None:
        ids = [i for i, name in names.items() if name == experiment]
        if not ids:
            raise ConfigError(
                f"no experiment named {experiment!r} in {_redact(uri)}{did_you_mean(experiment, list(names.values()))}",
                f"use one of: {', '.join(sorted(names.values())) or '(none yet: run autodl search first)'}",
            )
    else:
        ids = list(names)
    if not ids:
        return uri, []
    runs = client.search_runs(
        ids,
        filter_string=SEARCH_FILTER,
        order_by=["attributes.start_time DESC"],
        max_results=max(1, limit),
    )
    return uri, [_past_search(run, names) for run in runs]


def _past_search(run, experiments: dict[str, str]) -> PastSearch:
    tags, metrics = run.data.tags, run.data.metrics
    metric = tags.get("autodl.metric", "")
    started = datetime.fromtimestamp(run.info.start_time / 1000) if run.info.start_time else None
    return PastSearch(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        experiment=experiments.get(run.info.experiment_id, run.info.experiment_id),
        started=started,
        status=run.info.status,
        task=tags.get("autodl.task", ""),
        metric=metric,
        cv_score=metrics.get(f"cv_{metric}"),
        test_score=metrics.get(f"test_{metric}"),
        final_model=_final(tags),
        interrupted=tags.get("autodl.interrupted") == "true",
        model_uri=tags.get("autodl.registered_model_uri") or tags.get("autodl.model_uri", ""),
    )


def _final(tags: dict[str, str]) -> str:
    """The final model's name; for an ensemble, with how many members it blends."""
    name = tags.get("autodl.final_model", "")
    members = [m for m in tags.get("autodl.final_members", "").split(", ") if m]
    return f"{name} of {len(members)}" if name == "ensemble" and members else name


STATUS_COLORS = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan"}


def searches_table(searches: list[PastSearch], title: str, width: int):
    """A rich Table of the searches, one row each, and whether it is the narrow one: where the
    full table (a run id is 32 characters) does not fit `width`, the task and run id columns
    are left out and the start time loses its year."""
    from rich.console import Console

    table = _searches_table(searches, title, narrow=False)
    if Console(width=10_000).measure(table).maximum <= width:
        return table, False
    return _searches_table(searches, title, narrow=True), True


def _searches_table(searches: list[PastSearch], title: str, *, narrow: bool):
    from rich import box
    from rich.table import Table

    several = len({s.experiment for s in searches}) > 1
    cells = {
        "started": lambda s: (
            s.started.strftime("%m-%d %H:%M" if narrow else "%Y-%m-%d %H:%M") if s.started else ""
        ),
        "run": lambda s: s.run_name,
        "experiment": lambda s: s.experiment,
        "task": lambda s: s.task,
        "metric": lambda s: s.metric,
        "CV": lambda s: _number(s.cv_score),
        "test": lambda s: _number(s.test_score),
        "final model": lambda s: s.final_model,
        # narrow: one word, kept whole ("FINISHED (interrupted)" was cut to "FINISH" / "(inter")
        "status": lambda s: (
            f"[{STATUS_COLORS.get(s.status, 'white')}]"
            f"{'INTERRUPTED' if narrow and s.state != s.status else s.state}[/]"
        ),
        "run id": lambda s: s.run_id,
    }
    left_out = {"task", "run id"} if narrow else set()
    if not several:
        left_out.add("experiment")
    columns = [column for column in cells if column not in left_out]
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("CV", "test") else "left",
            # narrow: a long run name folds onto a second line, so that the status stays whole
            no_wrap=column in ("started", "CV", "test", "run id")
            or (column == "status" and narrow)
            or (column == "run" and not narrow),
            overflow="fold" if column == "run" else "ellipsis",
            min_width=8 if column in ("metric", "final model", "status") else None,
        )
    for search in searches:
        table.add_row(*[cells[column](search) for column in columns])
    return table


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _redact(uri: str) -> str:
    from autodl.tracking.base import redact

    return redact(uri) or ""
