"""Plain records of what a search did: per-candidate outcomes, the leaderboard, the final scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STATES = ("complete", "pruned", "failed")


@dataclass
class CandidateOutcome:
    """One baseline or trial: its CV scores, or why it has none."""

    name: str
    family: str
    params: dict[str, Any]
    state: str
    reason: str = ""
    fold_scores: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0
    fold_details: list[dict] = field(default_factory=list)
    trial_number: int | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores)) if self.fold_scores else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores)) if self.fold_scores else float("nan")

    @property
    def n_parameters(self) -> int | None:
        counts = [d["n_parameters"] for d in self.fold_details if "n_parameters" in d]
        return counts[0] if counts else None


@dataclass
class SearchResult:
    """Everything a search produced; `leaderboard` ranks complete candidates by CV score.

    `test_evaluation` / `cv_evaluation` hold the true targets (class indices or values) and the
    final model's scores on the test rows / its out-of-fold scores, for reports and plots.
    """

    task: str
    metric: str
    greater_is_better: bool
    outcomes: list[CandidateOutcome]
    final_name: str
    final_members: dict[str, float]
    cv_score: float
    test_scores: dict[str, float]
    output_dir: Path
    model_dir: Path
    decisions: dict[str, Any]
    run_id: str | None = None
    tracking_uri: str | None = None
    interrupted: bool = False
    model: Any = None
    test_evaluation: dict[str, np.ndarray] | None = None
    cv_evaluation: dict[str, np.ndarray] | None = None

    @property
    def leaderboard(self) -> pd.DataFrame:
        return leaderboard_frame(self.outcomes, self.metric, self.greater_is_better)

    @property
    def test_score(self) -> float | None:
        return self.test_scores.get(self.metric)


def leaderboard_frame(outcomes: list[CandidateOutcome], metric: str, greater_is_better: bool) -> pd.DataFrame:
    """Complete candidates ranked best first: mean and std of the CV metric, fit time."""
    rows = [
        {
            "rank": 0,
            "candidate": o.name,
            "family": o.family,
            f"cv_{metric}": o.mean,
            "cv_std": o.std,
            "folds": len(o.fold_scores),
            "fit_seconds": round(o.fit_seconds, 2),
        }
        for o in outcomes
        if o.state == "complete"
    ]
    frame = pd.DataFrame(
        rows,
        columns=["rank", "candidate", "family", f"cv_{metric}", "cv_std", "folds", "fit_seconds"],
    )
    frame = frame.sort_values(f"cv_{metric}", ascending=not greater_is_better, kind="stable").reset_index(
        drop=True
    )
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame
