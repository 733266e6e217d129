"""The Reporter interface: what a search tells its user as it goes. The base class is silent."""

from __future__ import annotations

from typing import Any

import pandas as pd

from autodl.data.dataset import Dataset
from autodl.metrics import Metric
from autodl.result import CandidateOutcome, SearchResult


class Reporter:
    """Receives progress events; subclass and override what you want to show."""

    def dataset(
        self,
        *,
        source: str,
        frame: pd.DataFrame,
        dataset: Dataset,
        metric: Metric,
        metric_reason: str,
    ) -> None:
        pass

    def split(
        self,
        *,
        n_dev: int,
        n_test: int,
        folds: int,
        repeats: int,
        stratified: bool,
        grouped_by: str | None = None,
        ordered_by: str | None = None,
    ) -> None:
        pass

    def phase(self, name: str, total: int | None, seconds_left: float | None) -> None:
        pass

    def outcome(
        self,
        outcome: CandidateOutcome,
        *,
        best: CandidateOutcome | None,
        seconds_left: float | None,
    ) -> None:
        pass

    def note(self, message: str) -> None:
        """A warning the user should see."""

    def info(self, message: str) -> None:
        """A plain progress message."""

    def finished(self, result: SearchResult, *, details: dict[str, Any]) -> None:
        pass
