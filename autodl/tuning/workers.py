"""Parallel trials: worker processes share the main process's Optuna study.

Optuna's journal file storage is safe for concurrent writers (SQLite is not). A worker records
each outcome in outcomes-w<i>.jsonl and keeps its best candidates in the run store; the main
process picks them up as they appear, so MLflow and the terminal have a single writer. Each
process runs TensorFlow and OpenMP on one thread so N workers do not oversubscribe the cores.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from autodl.config import SearchConfig
from autodl.result import CandidateOutcome
from autodl.store import read_outcomes
from autodl.tuning.cv import DevData


@dataclass(frozen=True)
class WorkerPayload:
    """What a worker needs; everything is picklable (the metric travels by name)."""

    index: int
    config: SearchConfig
    data: DevData
    metric_name: str
    output_dir: Path
    deadline: float | None


def worker_main(payload: WorkerPayload) -> None:
    """Entry point of a worker process: run trials until the shared budget is spent."""
    from autodl import runtime

    runtime.configure(threads=1)
    from autodl.metrics import resolve_metric
    from autodl.pool import CandidatePool
    from autodl.store import RunStore
    from autodl.tuning.engine import Budget, open_study, run_keras_search
    from autodl.tuning.sources import trial_source

    config = payload.config
    metric = resolve_metric(payload.data.task, payload.metric_name)
    _, trials = trial_source(config)
    store = RunStore(payload.output_dir)
    kept = CandidatePool(metric, store)
    study = open_study(
        storage_path=payload.output_dir / "study.journal",
        study_name=config.study_name or "autodl",
        metric=metric,
        seed=config.seed + payload.index,  # workers must not propose the same configurations
        resume=False,
        join=True,
        sampler=config.sampler,
        pruner=config.pruner,
    )

    def on_outcome(outcome: CandidateOutcome, cv) -> None:
        if cv is not None and outcome.state == "complete":
            kept.add(outcome.name, outcome.family, cv)
        store.append_outcome(outcome, stream=f"w{payload.index}")

    try:
        run_keras_search(
            study,
            trials=trials,
            data=payload.data,
            metric=metric,
            budget=Budget(config.trials, payload.deadline),
            seed=config.seed,
            on_outcome=on_outcome,
        )
    except KeyboardInterrupt:
        return  # the main process handles the interruption


class Workers:
    """N-1 worker processes beside the main one, and a reader of their outcomes."""

    def __init__(self, payloads: list[WorkerPayload]) -> None:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked TensorFlow state
        self.output_dir = payloads[0].output_dir if payloads else None
        self.processes = [context.Process(target=worker_main, args=(p,), daemon=True) for p in payloads]
        self.offsets = {p.index: 0 for p in payloads}
        for process in self.processes:
            process.start()

    def poll(self) -> list[CandidateOutcome]:
        """Outcomes the workers finished since the last poll."""
        found = []
        for index, offset in self.offsets.items():
            records, self.offsets[index] = read_outcomes(self.output_dir / f"outcomes-w{index}.jsonl", offset)
            found.extend(records)
        return found

    def join(self, timeout: float = 60.0) -> list[int]:
        """Wait for the workers; stop any that outlive `timeout`. Returns their exit codes."""
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(5)
        return [process.exitcode for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        self.join(5)
