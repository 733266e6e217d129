"""The Tracker interface the orchestrator talks to, and a tracker that records nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from autodl.result import CandidateOutcome, SearchResult


class Tracker(Protocol):
    """Receives the search's records in order: start, one call per candidate, finish or abort.

    `finish_seconds`: about how long `finish` takes; the search sets it aside from its time limit.
    """

    finish_seconds: float

    def start(
        self,
        *,
        config: dict[str, Any],
        summary: dict[str, Any],
        data: pd.DataFrame,
        source: str,
        resume_run_id: str | None = None,
    ) -> None: ...

    def log_candidate(self, outcome: CandidateOutcome, metric: str) -> None: ...

    def catch_up(self, outcomes: list[CandidateOutcome], metric: str) -> None:
        """On resume: log the stored candidates a killed process had not (completely) logged."""
        ...

    def finish(self, result: SearchResult, *, input_example: pd.DataFrame, model_dir: Path) -> None: ...

    def abort(self, status: str, reason: str) -> None: ...

    @property
    def run_id(self) -> str | None: ...

    @property
    def uri(self) -> str | None: ...


class NullTracker:
    """Tracks nothing (the Python estimators' default)."""

    run_id = None
    uri = None
    finish_seconds = 0.0

    def start(self, **_: Any) -> None:
        pass

    def log_candidate(self, outcome: CandidateOutcome, metric: str) -> None:
        pass

    def catch_up(self, outcomes: list[CandidateOutcome], metric: str) -> None:
        pass

    def finish(self, result: SearchResult, **_: Any) -> None:
        pass

    def abort(self, status: str, reason: str) -> None:
        pass


def redact(uri: str | None) -> str | None:
    """The URI with any password replaced by '***', for printing and logging."""
    if not uri or "@" not in uri:
        return uri
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
