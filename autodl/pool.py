"""The candidates that may join the final model: their OOF predictions and fold models."""

from __future__ import annotations

import numpy as np

from autodl.metrics import Metric
from autodl.store import RunStore
from autodl.tuning.cv import CVResult

KEEP_KERAS_MODELS = 8
REFERENCE = "dummy"  # the baseline that predicts the prior or the mean
# On more development rows than this, a baseline's fold models live on disk only once written:
# a million rows' forests take a gigabyte of memory the Keras search needs more.
IN_MEMORY_ROWS = 200_000


class CandidatePool:
    """Out-of-fold predictions and fold models of the candidates that may join the final model.

    Every baseline is kept; of the Keras trials only the best KEEP_KERAS_MODELS, so memory stays
    bounded over long searches. Kept candidates are mirrored to the run store; on large data a
    baseline's fold models are then held there only, and loaded again if the final model uses them.
    """

    def __init__(self, metric: Metric, store: RunStore) -> None:
        self.metric = metric
        self.store = store
        self.scores: dict[str, float] = {}
        self.oof: dict[str, np.ndarray] = {}
        self.models: dict[str, list | None] = {}  # None: still on disk only
        self.family: dict[str, str] = {}
        self.predict_seconds: dict[str, float] = {}  # its fold models on their held-out rows

    def add(self, name: str, family: str, cv: CVResult, *, persist: bool = True) -> None:
        """Keep a candidate; with `persist=False` it is already in the store, and a `cv` without
        models (loaded with `with_models=False`) leaves them there until `fold_models` asks."""
        on_disk_only = persist and family == "baseline" and len(cv.oof) > IN_MEMORY_ROWS
        self.scores[name], self.family[name], self.oof[name], self.models[name] = (
            cv.mean,
            family,
            cv.oof,
            None if on_disk_only else cv.models or None,
        )
        self.predict_seconds[name] = cv.predict_seconds
        keras = sorted(
            (n for n in self.scores if self.family[n] == "keras"),
            key=lambda n: self.scores[n],
            reverse=self.metric.greater_is_better,
        )
        evicted = keras[KEEP_KERAS_MODELS:]
        for old in evicted:
            for values in (self.scores, self.oof, self.models, self.family, self.predict_seconds):
                values.pop(old)
            self.store.drop_candidate(old)
        if persist and name not in evicted:
            # written while the next candidate fits when no Keras call is needed: scikit-learn
            # models, and the fold towers' networks, held as weights (a text column's fitted
            # vocabulary in the first trial's fold preprocessors took 1.5 s of a 60 s search)
            background = family == "baseline" or all(_held_as_weights(m[-1]) for m in cv.models)
            self.store.save_candidate(name, family, cv, background=background)

    @property
    def has_model(self) -> bool:
        """Whether a candidate other than the dummy reference is kept. The dummy is kept too:
        under a metric that scores values (log loss, RMSE) a blend may shrink overconfident
        members toward its prior, and when no model beats it the final model is it, said so."""
        return any(name != REFERENCE for name in self.scores)

    @property
    def kept_keras(self) -> int:
        """How many Keras trials are kept: the most the final model can hold."""
        return sum(1 for family in self.family.values() if family == "keras")

    def blendable(self) -> dict[str, np.ndarray]:
        """The out-of-fold predictions the final blend may choose from: the dummy's only under a
        metric that scores values (see `Metric.scores_values`)."""
        return {name: oof for name, oof in self.oof.items() if name != REFERENCE or self.metric.scores_values}

    def fold_models(self, name: str) -> list:
        """The candidate's fitted fold models, loaded from the store the first time if needed.

        Waits for the store's queued writes first: a network being written from its weights in
        the background must not be built (a Keras call) by the caller meanwhile.
        """
        self.store.flush()
        if self.models[name] is None:
            self.models[name] = self.store.load_candidate(name).models
        return self.models[name]

    def test_scoring_seconds(self, n_dev: int, n_test: int, n_folds: int, *, members: int) -> float:
        """About how long scoring `n_test` rows will take, with the `members` slowest-predicting
        candidates standing for the final model's members (not chosen yet).

        A candidate's out-of-fold prediction ran each fold model on its share of the `n_dev`
        rows: one model on n_dev rows in all. On the test rows each of its fold models predicts
        every row: `n_folds` x n_test / n_dev times as long.
        """
        slowest = sorted(self.predict_seconds.values(), reverse=True)[:members]
        return sum(slowest) * n_folds * n_test / max(n_dev, 1)

    def best(self) -> str:
        return sorted(self.scores, key=lambda n: self.scores[n], reverse=self.metric.greater_is_better)[0]


def _held_as_weights(estimator) -> bool:
    """A fold network kept as its weights, not yet built: the store writes it without Keras."""
    return getattr(estimator, "held_as_weights", False)
