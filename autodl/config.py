"""SearchConfig: every setting of a search, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autodl.errors import ConfigError, did_you_mean

TASKS = ("binary", "multiclass", "regression")
FINAL_MODES = ("ensemble", "best")
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "wilcoxon", "none")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Settings of one search. Invalid values raise ConfigError naming the flag and the fix."""

    target: str
    task: str | None = None
    metric: str | None = None
    test_size: float = 0.2
    folds: int = 5
    repeats: int = 1
    trials: int | None = None
    time_limit: float | None = 120.0
    space: str = "mlp"
    sampler: str = "tpe"
    pruner: str = "median"
    capacity_check: bool = True
    workers: int = 1
    trials_per_process: int = 50
    max_epochs: int | None = None
    baselines: tuple[str, ...] | None = None
    drop_columns: tuple[str, ...] = ()
    group_column: str | None = None
    time_column: str | None = None
    final: str = "ensemble"
    seed: int = 0
    output_dir: Path | None = None
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str = "autodl"
    register_model: str | None = None
    study_name: str | None = None
    resume: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(
                f"--task must be one of {', '.join(TASKS)}, got {self.task!r}",
                "pass --task binary, --task multiclass or --task regression",
            )
        if not (isinstance(self.folds, int) and self.folds >= 2):
            raise ConfigError(
                f"--folds must be an integer of at least 2, got {self.folds!r}",
                "use --folds 5 (the default) or --folds 3 for small data",
            )
        if not (isinstance(self.repeats, int) and self.repeats >= 1):
            raise ConfigError(
                f"--repeats must be an integer of at least 1, got {self.repeats!r}",
                "use --repeats 1 (plain k-fold) or more for iterated k-fold",
            )
        if not (
            isinstance(self.test_size, int | float)
            and math.isfinite(self.test_size)
            and 0.0 <= self.test_size < 0.9
        ):
            raise ConfigError(
                f"--test-size must be a fraction in [0, 0.9), got {self.test_size!r}",
                "use --test-size 0.2 (the default): the share of rows held out for the final score",
            )
        if self.group_column is not None and self.time_column is not None:
            raise ConfigError(
                "--group-column and --time-column cannot be combined",
                "pass one: --group-column keeps each group's rows together, --time-column tests on the latest rows",
            )
        if self.time_column is not None and self.repeats > 1:
            raise ConfigError(
                f"--repeats {self.repeats} reshuffles the folds, but time-ordered folds (--time-column) have one order",
                "leave out --repeats",
            )
        if self.trials is not None and self.trials < 0:
            raise ConfigError(
                f"--trials must be 0 or more, got {self.trials}",
                "pass --trials 20, or --trials 0 to fit the baselines only",
            )
        if self.time_limit is not None and not self.time_limit > 0:
            raise ConfigError(
                f"--time-limit must be a positive number of seconds, got {self.time_limit}",
                "pass --time-limit 300 for five minutes",
            )
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise ConfigError(
                f"--workers must be an integer of at least 1, got {self.workers!r}",
                "pass --workers 2 to run two trials at once (one per CPU core)",
            )
        if not (isinstance(self.trials_per_process, int) and self.trials_per_process >= 1):
            raise ConfigError(
                f"--trials-per-process must be an integer of at least 1, got {self.trials_per_process!r}",
                "pass --trials-per-process 50 (the default)",
            )
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ConfigError(
                f"--max-epochs must be at least 1, got {self.max_epochs}",
                "pass --max-epochs 100 or leave it to the search space",
            )
        if self.final not in FINAL_MODES:
            raise ConfigError(
                f"--final must be one of {', '.join(FINAL_MODES)}, got {self.final!r}",
                "pass --final ensemble (default) or --final best",
            )
        for flag, value, allowed in (
            ("--sampler", self.sampler, SAMPLERS),
            ("--pruner", self.pruner, PRUNERS),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"{flag} must be one of {', '.join(allowed)}, got {value!r}{did_you_mean(str(value), allowed)}",
                    f"pass {flag} {allowed[0]} (the default)",
                )
        from autodl.spaces import load_space
        from autodl.spaces.schema import is_hypermodel_spec

        if not is_hypermodel_spec(self.space):
            load_space(self.space)  # ConfigError for a typo, even when --trials 0 never samples it

    def as_dict(self) -> dict:
        """Plain values for logging (paths as strings)."""
        values = asdict(self)
        values["output_dir"] = str(self.output_dir) if self.output_dir else None
        from autodl.tracking.base import redact

        values["tracking_uri"] = redact(self.tracking_uri)  # never store a password
        return values
