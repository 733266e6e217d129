"""The search's own record on disk: what finished, kept as it finishes, so nothing is lost.

An interrupted or killed search can be resumed from it (`--resume`): finished baselines and
trials are not run again, and the candidates kept for the final model are reloaded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autodl.model import WrittenPreprocessing, load_pipelines, save_pipelines
from autodl.result import CandidateOutcome
from autodl.tuning.cv import CVResult

MANIFEST = "search.json"
OUTCOMES = "outcomes.jsonl"
CANDIDATES = "candidates"


def read_outcomes(path: Path, offset: int = 0) -> tuple[list[CandidateOutcome], int]:
    """Complete outcome lines of `path` from byte `offset`; returns them and the new offset."""
    if not path.is_file():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    records = []
    for line in data[:end].decode("utf-8").splitlines():
        try:
            records.append(CandidateOutcome(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a kill
    return records, offset + end


class RunStore:
    """Files under a search's output folder: manifest, outcomes log and kept candidates.

    Writes happen in the order they are asked for. A scikit-learn candidate may be written in
    the background (`save_candidate(..., background=True)`): serializing a forest's fold models
    takes seconds that the next fit can use. Writes asked for behind it wait their turn in the
    same background thread (an outcome line never precedes its candidate's files); every read,
    and every write with nothing queued ahead, first waits for the queue (`flush`), which raises
    a background write's error. After a failed write nothing queued behind it is written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: ThreadPoolExecutor | None = None
        self._last: Future | None = None
        self._failed: BaseException | None = None
        self._preprocessing = WrittenPreprocessing()  # touched by one write at a time

    def flush(self) -> None:
        """Wait for the queued writes; raise the first one that failed."""
        if self._last is not None:
            self._last.result()
            self._last = None
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    def _write(self, action: Callable[[], None], *, when: str = "in order") -> None:
        """Run a write: "in order" (in the background when writes are queued ahead, else now),
        "background" (queued), or "now" (after the queue, in this thread)."""
        queued = self._last is not None and not self._last.done()
        if when == "now" or (when == "in order" and not queued):
            self.flush()
            action()
            return
        if self._failed is not None:
            self.flush()  # raises
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autodl-store")
        self._last = self._writer.submit(self._guarded, action)

    def _guarded(self, action: Callable[[], None]) -> None:
        if self._failed is not None:
            return  # an earlier write failed: what follows it stays unwritten
        try:
            action()
        except BaseException as error:
            self._failed = error

    def read_manifest(self) -> dict[str, Any] | None:
        self.flush()
        path = self.folder / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=1, default=str)

        def write() -> None:
            path = self.folder / MANIFEST
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text)
            temporary.replace(path)  # never a half-written manifest

        self._write(write)

    def append_outcome(self, outcome: CandidateOutcome, stream: str = "") -> None:
        """Append to outcomes.jsonl, or to outcomes-<stream>.jsonl for a parallel worker."""
        path = self.folder / (f"outcomes-{stream}.jsonl" if stream else OUTCOMES)
        line = json.dumps(asdict(outcome), default=float) + "\n"

        def write() -> None:
            with path.open("a") as handle:
                handle.write(line)
                handle.flush()

        self._write(write)

    def outcomes(self) -> list[CandidateOutcome]:
        """Every recorded outcome, the main process's and the workers'."""
        self.flush()
        return [o for path in sorted(self.folder.glob("outcomes*.jsonl")) for o in read_outcomes(path)[0]]

    def save_candidate(self, name: str, family: str, cv: CVResult, *, background: bool = False) -> None:
        """Write a candidate's fold models and OOF predictions; `background` only for what saves
        without a Keras call (scikit-learn models, networks held as weights): a built Keras
        network is written at once, since clearing a Keras session between trials must not race
        a save."""
        if background:
            # skops' import walks every scikit-learn module (~2 s). Done first in the writer thread,
            # beside the main thread importing TensorFlow, it held the linear model's outcome line
            # back ~5 s, past the first Keras trial: a kill then lost a finished candidate.
            import skops.io  # noqa: F401

        self._write(
            lambda: self._save_candidate(name, family, cv), when="background" if background else "now"
        )

    def _save_candidate(self, name: str, family: str, cv: CVResult) -> None:
        folder = self.folder / CANDIDATES / name
        if folder.exists():
            shutil.rmtree(folder)
        try:
            # only the Keras trials share fitted fold preprocessors; a baseline's are its own
            written = self._preprocessing if family == "keras" else None
            parts = save_pipelines(cv.models, folder, "models", written, native=False)
            np.save(folder / "oof.npy", cv.oof)
            meta = {
                "name": name,
                "family": family,
                "fold_scores": cv.fold_scores,
                "fit_seconds": cv.fit_seconds,
                "predict_seconds": cv.predict_seconds,
                "parts": parts,
            }
            temporary = folder / "candidate.json.tmp"
            temporary.write_text(json.dumps(meta, default=float))
            temporary.replace(folder / "candidate.json")  # present only once everything is written
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a full disk gets its space back
            raise

    def drop_candidate(self, name: str) -> None:
        self._write(lambda: shutil.rmtree(self.folder / CANDIDATES / name, ignore_errors=True))

    def load_candidate(self, name: str, *, with_models: bool = True) -> CVResult | None:
        """One kept candidate, or None when it was dropped or its files are incomplete.

        Without `with_models` its fold models are left on disk (`models` is empty): loading
        Keras networks costs time and memory the search only needs for the final model.
        """
        self.flush()
        meta_path = self.folder / CANDIDATES / name / "candidate.json"
        if not meta_path.is_file():
            return None
        return self._load(meta_path, with_models)[2]

    def saved_parts(self, name: str) -> tuple[Path, list[dict[str, str]]] | None:
        """Where a kept candidate's fold pipelines are (for `copy_pipelines`), or None."""
        self.flush()
        meta_path = self.folder / CANDIDATES / name / "candidate.json"
        if not meta_path.is_file():
            return None
        return meta_path.parent, json.loads(meta_path.read_text())["parts"]

    def load_candidates(self, *, with_models: bool = True) -> list[tuple[str, str, CVResult]]:
        """Candidates whose files are complete (a kill mid-save leaves no candidate.json)."""
        self.flush()
        return [
            self._load(path, with_models)
            for path in sorted((self.folder / CANDIDATES).glob("*/candidate.json"))
        ]

    def _load(self, meta_path: Path, with_models: bool) -> tuple[str, str, CVResult]:
        meta = json.loads(meta_path.read_text())
        folder = meta_path.parent
        models = load_pipelines(meta["parts"], folder) if with_models else []
        cv = CVResult(
            meta["fold_scores"],
            np.load(folder / "oof.npy"),
            models,
            meta["fit_seconds"],
            predict_seconds=meta.get("predict_seconds", 0.0),  # absent from stores of earlier versions
        )
        return meta["name"], meta["family"], cv
