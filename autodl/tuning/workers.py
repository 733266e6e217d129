"""Trial processes beside the main one: parallel workers, and fresh processes that take over.

Optuna's journal file storage is safe for concurrent writers (SQLite is not). A worker records
each outcome in outcomes-w<i>.jsonl and keeps its best candidates in the run store; the main
process picks them up as they appear, so MLflow and the terminal have a single writer. Each
process runs TensorFlow and OpenMP on one thread so N workers do not oversubscribe the cores.

A process that has run its share of trials (SearchConfig.trials_per_process) hands the rest of
the search to a fresh process: TensorFlow keeps some native memory for every new layer shape it
has run, so a long search in one process would grow without bound.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from autodl import runtime
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

    @property
    def outcomes_path(self) -> Path:
        return self.output_dir / f"outcomes-w{self.index}.jsonl"


def worker_main(payload: WorkerPayload) -> str | None:
    """Run trials until the budget or this process's share is spent; returns why it stopped
    (None when interrupted: the main process handles the interruption)."""
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
        reason = run_keras_search(
            study,
            trials=trials,
            data=payload.data,
            metric=metric,
            budget=Budget(config.trials, payload.deadline),
            seed=config.seed,
            on_outcome=on_outcome,
            process_trials=config.trials_per_process,
        )
    except KeyboardInterrupt:
        return None
    store.flush()  # the last trial's files (written in the background) before saying why it stopped
    return reason


class Workers:
    """The trial processes beside the main one, a reader of their outcomes, and their replacement.

    Each worker is a fresh interpreter (`python -m autodl.tuning.workers`, the payload pickled on
    its stdin): no forked TensorFlow state, and unlike multiprocessing's spawn it never re-runs
    the user's own script. A worker that reports HANDOVER is replaced by a fresh process under
    the next free index (its own outcomes file and sampler seed).
    """

    def __init__(self, first_index: int) -> None:
        self.next_index = first_index
        self.running: dict[int, tuple[WorkerPayload, subprocess.Popen]] = {}
        self.offsets: dict[Path, int] = {}
        self.exit_codes: list[int] = []
        self.stop_reason: str | None = None

    def start(self, payload: WorkerPayload) -> None:
        """Start a worker; an outcomes file left by an earlier run is read from its end."""
        path = payload.outcomes_path
        self.offsets.setdefault(path, path.stat().st_size if path.is_file() else 0)
        process = subprocess.Popen(
            [sys.executable, "-m", "autodl.tuning.workers", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Out of the terminal's process group: a Ctrl-C reaches the search alone, which stops
            # its workers (one still importing printed KeyboardInterrupt's traceback).
            start_new_session=True,
        )
        self.running[payload.index] = (payload, process)
        self.next_index = max(self.next_index, payload.index + 1)
        with process.stdin:
            pickle.dump(payload, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)

    def take_over(self, payload: WorkerPayload) -> None:
        """Start a fresh process that continues the search of one that ran its share."""
        self.start(replace(payload, index=self.next_index))

    def poll(self) -> list[CandidateOutcome]:
        """Outcomes the workers finished since the last poll; replaces workers that handed over."""
        found = []
        for path, offset in self.offsets.items():
            records, self.offsets[path] = read_outcomes(path, offset)
            found.extend(records)
        self._replace_finished()
        return found

    def wait(self, adopt, deadline: float | None) -> None:
        """Adopt outcomes until every worker has stopped; stop those that outlive the deadline."""
        while self.running:
            for outcome in self.poll():
                adopt(outcome)
            if deadline is not None and time.monotonic() > deadline + 60:
                self.stop()
            time.sleep(0.2)
        for outcome in self.poll():
            adopt(outcome)

    def stop(self) -> None:
        """Terminate every worker (an interruption or a runaway past the deadline)."""
        for _, process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for _, process in self.running.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
            process.stdout.close()
        self.running.clear()

    def _replace_finished(self) -> None:
        from autodl.tuning.engine import HANDOVER

        for index, (payload, process) in list(self.running.items()):
            if process.poll() is None:
                continue
            del self.running[index]
            with process.stdout:
                reason = process.stdout.read().decode("utf-8", errors="replace").strip()
            if process.returncode:
                self.exit_codes.append(process.returncode)
            elif reason == HANDOVER:
                self.take_over(payload)
            elif reason:
                self.stop_reason = reason


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive a killed search: it would go on writing into the study."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the search died before the line above took effect
        sys.exit(0)


def _run_worker() -> None:
    """`python -m autodl.tuning.workers PARENT_PID`: read the payload, run, print why it stopped."""
    _die_with_parent(int(sys.argv[1]))
    payload = pickle.load(sys.stdin.buffer)
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else the libraries print goes to stderr, never into the reply
    reason = worker_main(payload)
    if reason is not None:
        reply.write(reason)
    reply.close()
    # The search waits for this process to end, and TensorFlow's teardown took ~2 s of it: a
    # search handed over to a fresh process ended that much past its Keras deadline.
    runtime.exit_without_teardown(0)


if __name__ == "__main__":
    _run_worker()
