"""The final model: a weighted blend of candidates, each the average of its fold pipelines.

It takes raw dataframe rows (the columns of the training table); preprocessing is inside each
fold pipeline. Saved as a folder: `autodl-model.json`, scikit-learn parts in skops format (not
pickle) and Keras networks in the native `.keras` format, loaded in Keras safe mode.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from autodl.candidates.base import predict_scores
from autodl.errors import DataError

MANIFEST = "autodl-model.json"
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "autodl.", "builtins.", "collections.")
# functools.partial is trusted only because the function it wraps must itself pass the prefixes.
TRUSTED_NAMES = ("functools.partial",)


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
    ) -> None:
        self.members = members
        self.task = task
        self.classes = classes
        self.columns = columns
        self.target = target

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
        extra = [c for c in frame.columns if c not in self.columns and c != self.target]
        if extra:
            warnings.warn(
                f"ignoring {len(extra)} column(s) unknown to the model: {', '.join(map(str, extra[:5]))}",
                stacklevel=3,
            )
        return frame[self.columns]

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Blended class probabilities (classification) or values (regression)."""
        features = self._align(frame)
        total = None
        for member in self.members:
            member_scores = np.mean(
                [predict_scores(p, features, self.n_classes) for p in member.pipelines], axis=0
            )
            total = member.weight * member_scores if total is None else total + member.weight * member_scores
        return total

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        scores = self.scores(frame)
        if self.task == "regression":
            return scores
        return np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scores(frame)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A table of predictions: `prediction`, plus `proba_<class>` per class for classification."""
        scores = self.scores(frame)
        if self.task == "regression":
            return pd.DataFrame({"prediction": scores}, index=frame.index)
        out = pd.DataFrame(
            {"prediction": np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]},
            index=frame.index,
        )
        for i, label in enumerate(self.classes):
            out[f"proba_{label}"] = scores[:, i]
        return out

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model folder; returns it."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": 1,
            "task": self.task,
            "classes": list(self.classes) if self.classes else None,
            "columns": self.columns,
            "target": self.target,
            "members": [
                {
                    "name": member.name,
                    "weight": member.weight,
                    "folds": save_pipelines(member.pipelines, folder, f"member_{index}"),
                }
                for index, member in enumerate(self.members)
            ],
            **(extra or {}),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_plain))
        return folder

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
        )


def save_pipelines(pipelines: list[Pipeline], root: Path, prefix: str) -> list[dict[str, str]]:
    """Save fitted fold pipelines under root/prefix/fold_i; returns their manifest entries."""
    import skops.io as sio

    from autodl.candidates.keras_model import KerasTabularModel

    parts = []
    for index, pipeline in enumerate(pipelines):
        base = root / prefix / f"fold_{index}"
        base.mkdir(parents=True, exist_ok=True)
        sio.dump(pipeline[:-1], base / "preprocess.skops")
        estimator = pipeline[-1]
        if isinstance(estimator, KerasTabularModel):
            estimator.save(base / "keras")
            kind = "keras"
        else:
            sio.dump(estimator, base / "estimator.skops")
            kind = "skops"
        parts.append({"path": str(base.relative_to(root)), "estimator": kind})
    return parts


def load_pipelines(parts: list[dict[str, str]], root: Path) -> list[Pipeline]:
    """The fold pipelines that save_pipelines wrote."""
    from autodl.candidates.keras_model import KerasTabularModel

    pipelines = []
    for part in parts:
        base = root / part["path"]
        preprocess = _load_skops(base / "preprocess.skops")
        if part["estimator"] == "keras":
            estimator = KerasTabularModel.load(base / "keras")
        else:
            estimator = _load_skops(base / "estimator.skops")
        pipelines.append(Pipeline([*preprocess.steps, ("model", estimator)]))
    return pipelines


def _load_skops(path: Path):
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES) and t not in TRUSTED_NAMES]
    if refused:
        raise DataError(
            f"{path} holds types outside the allow-list: {', '.join(refused[:3])}",
            "load only model folders that autodl wrote",
        )
    return sio.load(path, trusted=untrusted)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
