"""The final model: a weighted blend of candidates, each the average of its fold pipelines.

It takes raw dataframe rows (the columns of the training table); preprocessing is inside each
fold pipeline. Saved as a folder: `autodl-model.json`, scikit-learn parts in skops format (not
pickle) and Keras networks in the native `.keras` format, loaded in Keras safe mode.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from autodl.candidates.base import predict_scores
from autodl.errors import DataError

MANIFEST = "autodl-model.json"
# Classes from these packages may be loaded from a skops file; functions must be listed by name,
# since a function (builtins.exec, numpy.load, ...) wrapped in functools.partial and called by a
# FunctionTransformer would run code from the file.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "autodl.", "builtins.", "collections.")
# HistGradientBoosting keeps functools.partial(check_array).
TRUSTED_FUNCTIONS = ("sklearn.utils.validation.check_array",)
TRUSTED_NAMES = ("functools.partial", *TRUSTED_FUNCTIONS)
UNSAFE_CLASSES = ("builtins.type",)
# Arrays from this size up are deflated (level 1) in skops files: a forest's packed trees shrink
# ~4x (a fold of the extra trees on 3,000 rows: 46 -> 11 MB, 0.33 s to deflate without the GIL,
# 0.15 s to inflate). Every byte of them is written to disk up to four times in a search (run
# store, then MLflow's staging folder and artifact store), and a search's writes back up: the
# MLflow copy of 250 MB of forests took 3.6 s at the end of a search, 0.1 s on an idle disk.
COMPRESS_FROM_BYTES = 1 << 20


@dataclass
class Member:
    name: str
    weight: float
    pipelines: list[Pipeline]


class TabularModel:
    """Predicts from raw rows. `predict` gives labels or values; `predict_proba` class probabilities."""

    def __init__(
        self,
        *,
        members: list[Member],
        task: str,
        classes: tuple | None,
        columns: list[str],
        target: str,
        set_aside: tuple[str, ...] = (),
    ) -> None:
        self.members = _share_equal_preprocessing(members)
        self.task = task
        self.classes = classes
        self.columns = columns
        self.target = target
        # columns of the training table the search used otherwise (--drop, --group-column):
        # rows to predict may hold them, as the training file did, without a warning
        self.set_aside = tuple(set_aside)

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def _align(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5])
            raise DataError(
                f"the input lacks {len(missing)} column(s) the model was trained on: {shown}",
                "add those columns (empty cells are allowed) to the file",
            )
        known = {*self.columns, self.target, *self.set_aside}
        extra = [c for c in frame.columns if c not in known]
        if extra:
            warnings.warn(
                f"ignoring {len(extra)} column(s) unknown to the model: {', '.join(map(str, extra[:5]))}",
                stacklevel=3,
            )
        return frame[self.columns]

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Blended class probabilities (classification) or values (regression).

        The rows are transformed once per distinct fitted preprocessing, not once per fold
        pipeline: a blend of 7 members x 5 folds on titanic has 10 distinct ones, not 35.
        """
        features = self._align(frame)
        by_preprocessing: dict[tuple[int, ...], list[tuple[int, Pipeline]]] = {}
        for index, member in enumerate(self.members):
            for pipeline in member.pipelines:
                by_preprocessing.setdefault(_identity(pipeline[:-1]), []).append((index, pipeline))
        sums: list[Any] = [0.0] * len(self.members)
        for pipelines in by_preprocessing.values():
            transformed = pipelines[0][1][:-1].transform(features)
            for index, pipeline in pipelines:
                sums[index] = sums[index] + predict_scores(pipeline[-1], transformed, self.n_classes)
        return sum(
            member.weight * (total / len(member.pipelines))
            for member, total in zip(self.members, sums, strict=True)
        )

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        scores = self.scores(frame)
        if self.task == "regression":
            return scores
        return np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scores(frame)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A table of predictions: `prediction`, plus `proba_<class>` per class for classification."""
        return self.frame_from_scores(self.scores(frame), frame.index)

    def frame_from_scores(self, scores: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
        """What `predict_frame` gives for rows on which `scores` gives the model's scores."""
        scores = np.asarray(scores, dtype=float)
        if self.task == "regression":
            return pd.DataFrame({"prediction": scores}, index=index)
        out = pd.DataFrame(
            {"prediction": np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]},
            index=index,
        )
        for i, label in enumerate(self.classes):
            out[f"proba_{label}"] = scores[:, i]
        return out

    def save(
        self,
        folder: Path,
        extra: dict[str, Any] | None = None,
        saved: dict[str, tuple[Path, list[dict[str, str]]]] | None = None,
    ) -> Path:
        """Write the model folder; returns it.

        `saved` maps a member's name to fold pipelines `save_pipelines` already wrote (root and
        parts): their files are linked or copied instead of serialized again (forests take
        seconds to serialize and the search has already stored every candidate). A Keras
        member's networks are written anew, as native `.keras` files (the run store keeps them
        as weights), beside its stored preprocessing files, linked as well: a text column's
        fitted vocabulary took ~0.3 s a fold to serialize, past the time limit's end.
        """
        folder.mkdir(parents=True, exist_ok=True)
        saved = saved or {}
        for old in folder.glob("member_*"):  # a resumed search's earlier model: its files may be
            shutil.rmtree(old)  # hard links into the run store, never to be written through
        manifest = {
            "format": 1,
            "task": self.task,
            "classes": list(self.classes) if self.classes else None,
            "columns": self.columns,
            "target": self.target,
            "set_aside": list(self.set_aside),
            "members": [
                {
                    "name": member.name,
                    "weight": member.weight,
                    "folds": self._save_member(member, folder, f"member_{index}", saved.get(member.name)),
                }
                for index, member in enumerate(self.members)
            ],
            **(extra or {}),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_plain))
        return folder

    @staticmethod
    def _save_member(
        member: Member, folder: Path, prefix: str, saved: tuple[Path, list[dict[str, str]]] | None
    ) -> list[dict[str, str]]:
        if saved is None:
            return save_pipelines(member.pipelines, folder, prefix)
        source, parts = saved
        if all(part["estimator"] != "keras" for part in parts):
            return copy_pipelines(source, parts, folder, prefix)
        stored = [source / part["path"] / "preprocess.skops" for part in parts]
        return save_pipelines(member.pipelines, folder, prefix, preprocessing_files=stored)

    @classmethod
    def load(cls, folder: str | Path) -> TabularModel:
        """Load a saved model folder (skops with an allow-list of types, Keras in safe mode)."""
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise DataError(
                f"{folder} is not an autodl model folder (no {MANIFEST})",
                "pass the 'model' folder printed by autodl search, or an MLflow model URI",
            )
        manifest = json.loads(manifest_path.read_text())
        members = [
            Member(member["name"], float(member["weight"]), load_pipelines(member["folds"], folder))
            for member in manifest["members"]
        ]
        classes = tuple(manifest["classes"]) if manifest["classes"] is not None else None
        return cls(
            members=members,
            task=manifest["task"],
            classes=classes,
            columns=manifest["columns"],
            target=manifest["target"],
            set_aside=tuple(manifest.get("set_aside", ())),
        )


def _identity(preprocess: Pipeline) -> tuple[int, ...]:
    return tuple(id(step) for _, step in preprocess.steps)


def _share_equal_preprocessing(members: list[Member]) -> list[Member]:
    """The members with fold pipelines whose fitted preprocessing is equal holding one object.

    Candidates of the same preprocessing style fit their own, equal, preprocessors on the same
    folds. Equal is equal pickled state (see `_state`): a difference in the bytes (e.g. a set's
    order) only leaves two copies apart, as does a preprocessor that cannot be pickled.
    """
    by_state: dict[bytes, Pipeline] = {}
    by_identity: dict[tuple[int, ...], Pipeline] = {}
    shared = []
    for member in members:
        pipelines = []
        for pipeline in member.pipelines:
            preprocess = pipeline[:-1]
            key = _identity(preprocess)
            if key not in by_identity:
                by_identity[key] = by_state.setdefault(_state(preprocess) or repr(key).encode(), preprocess)
            pipelines.append(Pipeline([*by_identity[key].steps, pipeline.steps[-1]]))
        shared.append(Member(member.name, member.weight, pipelines))
    return shared


def _state(preprocess: Pipeline) -> bytes | None:
    """A digest of the pickled fitted state; None if it cannot be pickled (e.g. a user's lambda).

    Pickled without its memo ("fast" mode): with it, two equal objects pickle differently when
    one holds the same string object twice and the other two equal strings (seen between
    preprocessors loaded from files).
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        pickler.fast = True
        pickler.dump(preprocess.steps)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        return None
    return hashlib.sha256(buffer.getbuffer()).digest()


def save_pipelines(
    pipelines: list[Pipeline],
    root: Path,
    prefix: str,
    written: WrittenPreprocessing | None = None,
    *,
    native: bool = True,
    preprocessing_files: list[Path] | None = None,
) -> list[dict[str, str]]:
    """Save fitted fold pipelines under root/prefix/fold_i; returns their manifest entries.

    With `written`, a preprocessing part already written through it is hard-linked, not written
    again (see WrittenPreprocessing). `preprocessing_files` (one per pipeline) are files that
    already hold the pipelines' preprocessing parts: linked (or copied) instead. With
    `native=False`, Keras networks not yet built are written as weights (the run store's
    format; see KerasTabularModel.save).
    """
    from autodl.candidates.keras_model import KerasTabularModel

    if preprocessing_files is not None and len(preprocessing_files) != len(pipelines):
        raise ValueError(f"{len(preprocessing_files)} preprocessing files for {len(pipelines)} pipelines")
    parts = []
    for index, pipeline in enumerate(pipelines):
        base = root / prefix / f"fold_{index}"
        base.mkdir(parents=True, exist_ok=True)
        preprocess, path = pipeline[:-1], base / "preprocess.skops"
        if preprocessing_files is not None:
            _link_or_copy(str(preprocessing_files[index]), str(path))
        elif written is None or not written.link(preprocess, path):
            dump_skops(preprocess, path)
            if written is not None:
                written.add(preprocess, path)
        estimator = pipeline[-1]
        if isinstance(estimator, KerasTabularModel):
            estimator.save(base / "keras", native=native)
            kind = "keras"
        else:
            dump_skops(estimator, base / "estimator.skops")
            kind = "skops"
        parts.append({"path": str(base.relative_to(root)), "estimator": kind})
    return parts


class WrittenPreprocessing:
    """Preprocessing files already written, by the identity of the fitted objects they hold.

    A search's Keras trials share each fold's fitted preprocessor, so their candidates would
    otherwise write the same skops file (~50 ms each) five times a trial. The objects are kept
    alive here so that their identities are never reused by other objects; a fitted fold
    preprocessor is never fitted again.
    """

    def __init__(self) -> None:
        self._files: dict[tuple[int, ...], tuple[list[Any], Path]] = {}

    def add(self, preprocess: Pipeline, path: Path) -> None:
        self._files[_identity(preprocess)] = ([step for _, step in preprocess.steps], path)

    def link(self, preprocess: Pipeline, path: Path) -> bool:
        """Hard-link the file written for these same objects to `path`; False if there is none
        (or it was deleted since, or the disk refuses links): the caller writes it."""
        known = self._files.get(_identity(preprocess))
        if known is None:
            return False
        try:
            os.link(known[1], path)
        except OSError:
            return False
        return True


def copy_pipelines(
    source: Path, parts: list[dict[str, str]], root: Path, prefix: str
) -> list[dict[str, str]]:
    """Fold pipelines saved under `source` placed under root/prefix/fold_i (hard links where the
    disk allows, else copies); returns their manifest entries."""
    copied = []
    for index, part in enumerate(parts):
        base = root / prefix / f"fold_{index}"
        shutil.copytree(source / part["path"], base, copy_function=_link_or_copy, dirs_exist_ok=True)
        copied.append({**part, "path": str(base.relative_to(root))})
    return copied


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another disk, or links not allowed
        shutil.copy2(source, target)


def load_pipelines(parts: list[dict[str, str]], root: Path) -> list[Pipeline]:
    """The fold pipelines that save_pipelines wrote."""
    from autodl.candidates.keras_model import KerasTabularModel

    pipelines = []
    for part in parts:
        base = root / part["path"]
        preprocess = _load_skops(base / "preprocess.skops")
        if part["estimator"] == "keras":
            try:
                estimator = KerasTabularModel.load(base / "keras")
            except (ValueError, TypeError, KeyError, OSError) as error:
                reason = str(error).strip().split(". ")[0].splitlines()[0][:300] if str(error).strip() else ""
                network = next((base / "keras").glob("*.keras"), base / "keras" / "network.npz")
                raise DataError(
                    f"cannot load the Keras network {network} ({reason or type(error).__name__})",
                    "load only model folders that autodl wrote (Keras safe mode refuses code stored in a model file)",
                ) from error
        else:
            estimator = _load_skops(base / "estimator.skops")
        pipelines.append(Pipeline([*preprocess.steps, ("model", estimator)]))
    return pipelines


class _IndexedNames(list):
    """`ZipFile.namelist()` whose `in` looks the name up in the archive's index."""

    def __init__(self, index: dict) -> None:
        super().__init__(index)
        self._index = index

    def __contains__(self, name: object) -> bool:
        return name in self._index


class _IndexedZipFile(zipfile.ZipFile):
    def namelist(self) -> list[str]:
        return _IndexedNames(self.NameToInfo)

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None) -> None:
        size = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if compress_type is None and size >= COMPRESS_FROM_BYTES:
            compress_type, compresslevel = zipfile.ZIP_DEFLATED, 1
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)


def dump_skops(obj: Any, path: Path) -> None:
    """Write `obj` to `path` in skops format, as `skops.io.dump` does, without its quadratic cost.

    skops' `dump` checks each array's member name against `ZipFile.namelist()`, a new list per
    array, so its time grows with the square of the array count: a fitted HistGradientBoosting
    holds three arrays per tree (1800 trees for a 3-class model of 600 iterations; 1.6 s to
    write, against 0.5 s here), and the run store writes five per baseline while the next one
    fits. It also encodes the schema with `indent=2`, which takes Python's slow JSON encoder.
    Large arrays are deflated (see COMPRESS_FROM_BYTES). Same members and schema otherwise;
    `skops.io.load` reads the file as it reads its own.
    """
    import skops
    from skops.io._utils import SaveContext, get_state  # dump's own steps (skops.io._persist._save)

    buffer = io.BytesIO()  # a zip member's header is patched after its data: seeks, cheap in memory
    with _IndexedZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(obj, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state))
    path.write_bytes(buffer.getbuffer())


def _load_skops(path: Path):
    """Load a skops file whose every type passes the allow-list.

    The types are read from the file's schema in one pass (skops' own `get_untrusted_types`
    builds the whole object tree for it, half the cost of a load); skops still enforces the list:
    `load` refuses any type of the file not passed to it as trusted.
    """
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    types, partials = _schema_types(path)
    refused = [name for name in sorted(types) if not _trusted(name)]
    refused += [f"functools.partial({name})" for name in partials if name not in TRUSTED_FUNCTIONS]
    if refused:
        raise DataError(
            f"{path} holds types outside the allow-list: {', '.join(refused[:3])}",
            "load only model folders that autodl wrote",
        )
    try:
        return sio.load(path, trusted=sorted(types))
    except UntrustedTypesFoundException as error:  # a type this schema walk did not see
        raise DataError(
            f"{path} holds types outside the allow-list: {str(error).splitlines()[0][:200]}",
            "load only model folders that autodl wrote",
        ) from error


def _trusted(name: str) -> bool:
    """A listed name, or a class (never a function) from a trusted package."""
    if name in TRUSTED_NAMES:
        return True
    if not name.startswith(TRUSTED_PREFIXES) or name in UNSAFE_CLASSES:
        return False
    return isinstance(_resolve(name), type)


def _schema_types(path: Path) -> tuple[set[str], list[str]]:
    """Every type a skops file names, and what each functools.partial in it wraps (a class there
    would be called with the partial's arguments)."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    types, partials, stack = set(), [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                types.add(f"{node['__module__']}.{node['__class__']}")
            if node.get("__loader__") == "PartialNode":
                wrapped = (node.get("content") or {}).get("func") or {}
                partials.append(f"{wrapped.get('__module__')}.{wrapped.get('__class__')}")
            stack.extend(node.values())
    return types, partials


def _resolve(name: str):
    """The object a dotted name refers to, or None; never runs a module's __main__."""
    import importlib

    parts = name.split(".")
    if "__main__" in parts:
        return None
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            return None
        return found
    return None


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
