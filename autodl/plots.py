"""Review plots of a search, rendered with matplotlib (Agg): each function returns a Figure.

`search_plots` renders all of them for a finished search and says why any plot was skipped;
the MLflow tracker logs the figures as PNG artifacts under `plots/`. Nothing here predicts: the
final model's plots use the test (or out-of-fold) scores the search already computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodl.result import CandidateOutcome, SearchResult

FIGSIZE = (5.6, 4.2)
DPI = 80
MAX_CURVE_CLASSES = 10  # one-vs-rest curves drawn for at most this many classes
MAX_MATRIX_CLASSES = 30


@dataclass
class PlotSet:
    """Figures by name (file stem) and, for each plot that was not drawn, the reason."""

    figures: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def attempt(self, name: str, draw: Callable[[], Any]) -> None:
        """Draw one plot; if it cannot be drawn, record why instead of failing."""
        try:
            self.figures[name] = draw()
        except Exception as error:  # a plot is an extra: say why it is missing, never fail the search
            self.skipped[name] = f"{type(error).__name__}: {error}".splitlines()[0][:250]

    def save(self, folder: Path, dpi: int = DPI) -> list[Path]:
        """Write each figure as <name>.png into `folder` and close it; returns the paths."""
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, figure in self.figures.items():
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=dpi)
            plt.close(figure)
            paths.append(path)
        return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _figure(title: str):
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=FIGSIZE, layout="constrained")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    return figure, axes


# --- the Optuna study ---------------------------------------------------------------------------


def load_study(journal: Path, study_name: str = "autodl"):
    """The search's Optuna study from its journal file (read only), or None when there is none."""
    if not Path(journal).is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))))


def _complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def optimization_history(study, metric: str):
    """Each complete trial's CV score in trial order, and the best score so far."""
    trials = _complete(study)
    if len(trials) < 2:
        raise ValueError(f"needs at least 2 complete trials, the study has {len(trials)}")
    maximize = study.direction.name == "MAXIMIZE"
    numbers = [t.number for t in trials]
    values = np.array([t.value for t in trials], dtype=float)
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    n_all = len(study.get_trials(deepcopy=False))
    figure, axes = _figure(f"Optimization history ({len(trials)} complete of {n_all} trials)")
    axes.plot(numbers, values, "o", color="tab:blue", alpha=0.7, label="trial (CV mean)")
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial number")
    axes.set_ylabel(f"CV {metric} ({'higher' if maximize else 'lower'} is better)")
    axes.legend(fontsize=8)
    return figure


def param_importances(study, metric: str):
    """fANOVA importances of the searched parameters for the CV score (complete trials only)."""
    import optuna

    trials = _complete(study)
    if len(trials) < 2:
        raise ValueError(f"needs at least 2 complete trials, the study has {len(trials)}")
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if not importances:
        raise ValueError("no parameter is shared by all complete trials")
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    figure, axes = _figure(f"Parameter importances for CV {metric} (fANOVA, {len(trials)} trials)")
    axes.barh(names, values, color="tab:blue")
    axes.set_xlabel("importance (share of the score's variance)")
    axes.grid(alpha=0.3, axis="x")
    return figure


# --- candidates ----------------------------------------------------------------------------------


def best_keras(outcomes: Sequence[CandidateOutcome], greater_is_better: bool) -> CandidateOutcome | None:
    """The complete Keras trial with the best mean CV score that has training histories."""
    found = [o for o in outcomes if o.family == "keras" and o.state == "complete" and _histories(o)]
    if not found:
        return None
    return max(found, key=lambda o: o.mean if greater_is_better else -o.mean)


def _histories(outcome: CandidateOutcome) -> list[dict[str, list[float]]]:
    return [d["history"] for d in outcome.fold_details if d.get("history")]


def learning_curves(outcome: CandidateOutcome, note: str = "loss per epoch"):
    """Training and inner-validation loss per epoch of each fold model of one Keras candidate."""
    histories = _histories(outcome)
    if not histories:
        raise ValueError(f"{outcome.name} has no training history")
    plt = _pyplot()
    figure, axes = _figure(f"Learning curves of {outcome.name} ({note})")
    colors = plt.get_cmap("tab10")
    for index, history in enumerate(histories):
        color = colors(index % 10)
        for key, style in (("loss", "o-"), ("val_loss", "s--")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                axes.plot(epochs, values, style, color=color, markersize=3, label=f"fold {index} {key}")
        best = outcome.fold_details[index].get("best_epoch") if index < len(outcome.fold_details) else None
        if best:
            axes.axvline(best, color=color, alpha=0.25)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.legend(fontsize=7, ncol=2)
    return figure


def fold_scores(outcome: CandidateOutcome, metric: str):
    """The CV score of each fold model of one candidate, with their mean."""
    if not outcome.fold_scores:
        raise ValueError(f"{outcome.name} has no fold scores ({outcome.state})")
    folds = np.arange(len(outcome.fold_scores))
    figure, axes = _figure(f"CV {metric} per fold of {outcome.name}")
    axes.bar(folds, outcome.fold_scores, color="tab:blue", alpha=0.8)
    axes.axhline(outcome.mean, color="tab:red", label=f"mean {outcome.mean:.4f} (std {outcome.std:.4f})")
    low, high = min(outcome.fold_scores), max(outcome.fold_scores)
    margin = max(high - low, abs(high) * 0.02, 1e-6)
    axes.set_ylim(low - margin, high + margin)
    axes.set_xticks(folds, [f"fold {i}" for i in folds])
    axes.set_ylabel(f"CV {metric}")
    axes.legend(fontsize=8)
    return figure


def candidate_plots(outcome: CandidateOutcome, metric: str) -> PlotSet:
    """The plots of one candidate's run: its fold scores and, for a network, its learning curves."""
    plots = PlotSet()
    plots.attempt("fold_scores", lambda: fold_scores(outcome, metric))
    if _histories(outcome):
        plots.attempt("learning_curves", lambda: learning_curves(outcome))
    return plots


# --- the final model -------------------------------------------------------------------------------


def _labels(classes: Sequence | None, n: int) -> list[str]:
    return [str(c) for c in classes] if classes and len(classes) == n else [str(i) for i in range(n)]


def _probabilities(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores


def confusion_matrix(y_true, scores, classes: Sequence | None, where: str):
    """Counts of true vs predicted class (the most probable class), annotated."""
    from sklearn.metrics import confusion_matrix as counts

    proba = _probabilities(scores)
    n = proba.shape[1]
    if n > MAX_MATRIX_CLASSES:
        raise ValueError(f"{n} classes are too many for a readable matrix (at most {MAX_MATRIX_CLASSES})")
    labels = _labels(classes, n)
    matrix = counts(np.asarray(y_true, dtype=int), proba.argmax(axis=1), labels=list(range(n)))
    figure, axes = _figure(f"Confusion matrix, final model\n({where})")
    axes.grid(False)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    ticks = np.arange(n)
    axes.set_xticks(ticks, labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 12:
        limit = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                axes.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > limit else "black",
                )
    return figure


def _one_vs_rest(y_true, scores, classes) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, is-this-class, score-for-this-class) per class; the positive class only for binary."""
    proba = _probabilities(scores)
    y_true = np.asarray(y_true, dtype=int)
    labels = _labels(classes, proba.shape[1])
    indices = [1] if proba.shape[1] == 2 else range(min(proba.shape[1], MAX_CURVE_CLASSES))
    found = [(labels[i], y_true == i, proba[:, i]) for i in indices]
    usable = [
        (label, positive, score) for label, positive, score in found if 0 < positive.sum() < len(positive)
    ]
    if not usable:
        raise ValueError("every true label is the same class, so the curves are undefined")
    return usable


def roc_curves(y_true, scores, classes: Sequence | None, where: str):
    """ROC curve of the positive class (binary) or one-vs-rest per class (multiclass), with AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = _one_vs_rest(y_true, scores, classes)
    multi = _probabilities(scores).shape[1] > 2
    figure, axes = _figure(f"ROC{' one-vs-rest' if multi else ''}, final model\n({where})")
    for label, positive, score in curves:
        fpr, tpr, _ = roc_curve(positive, score)
        axes.plot(
            fpr,
            tpr,
            label=f"{'class ' if multi else 'positive '}{label} (AUC {roc_auc_score(positive, score):.3f})",
        )
    axes.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(fontsize=7, loc="lower right")
    return figure


def pr_curves(y_true, scores, classes: Sequence | None, where: str):
    """Precision-recall curve of the positive class or one-vs-rest per class, with average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    curves = _one_vs_rest(y_true, scores, classes)
    multi = _probabilities(scores).shape[1] > 2
    figure, axes = _figure(f"Precision-recall{' one-vs-rest' if multi else ''}, final model\n({where})")
    for label, positive, score in curves:
        precision, recall, _ = precision_recall_curve(positive, score)
        ap = average_precision_score(positive, score)
        axes.plot(recall, precision, label=f"{'class ' if multi else 'positive '}{label} (AP {ap:.3f})")
        axes.axhline(positive.mean(), color=axes.lines[-1].get_color(), alpha=0.3, linestyle=":")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize=7, loc="lower left")
    return figure


def predicted_vs_actual(y_true, predicted, where: str):
    """Predicted against true values, with the identity line."""
    y_true, predicted = np.asarray(y_true, dtype=float), np.asarray(predicted, dtype=float).ravel()
    figure, axes = _figure(f"Predicted vs actual, final model\n({where})")
    axes.scatter(y_true, predicted, s=8, alpha=0.5)
    low, high = float(min(y_true.min(), predicted.min())), float(max(y_true.max(), predicted.max()))
    axes.plot([low, high], [low, high], ":", color="grey", label="perfect")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.legend(fontsize=8)
    return figure


def residuals(y_true, predicted, where: str):
    """Residuals (actual - predicted) against the prediction."""
    y_true, predicted = np.asarray(y_true, dtype=float), np.asarray(predicted, dtype=float).ravel()
    figure, axes = _figure(f"Residuals, final model\n({where})")
    axes.scatter(predicted, y_true - predicted, s=8, alpha=0.5)
    axes.axhline(0, color="grey", linestyle=":")
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual - predicted")
    return figure


# --- all of them ----------------------------------------------------------------------------------


def search_plots(
    result: SearchResult, *, study_journal: Path | None = None, study_name: str = "autodl"
) -> PlotSet:
    """Every review plot of a finished search; a plot that cannot be drawn is listed with why."""
    plots = PlotSet()
    attempt = plots.attempt

    journal = Path(study_journal) if study_journal else result.output_dir / "study.journal"
    try:
        study = load_study(journal, study_name)
        study_missing = None if study is not None else "no Optuna study (no Keras trials were run)"
    except Exception as error:
        study, study_missing = None, f"cannot read the Optuna study: {type(error).__name__}: {error}"[:250]
    for name, draw in (
        ("optimization_history", optimization_history),
        ("param_importances", param_importances),
    ):
        if study is None:
            plots.skipped[name] = study_missing
        else:
            attempt(name, lambda draw=draw: draw(study, result.metric))

    best = best_keras(result.outcomes, result.greater_is_better)
    if best is None:
        plots.skipped["learning_curves"] = "no complete Keras trial with training histories"
    else:
        attempt("learning_curves", lambda: learning_curves(best, "best Keras trial, loss per epoch"))

    evaluation, where = final_evaluation(result)
    final = (
        ("confusion_matrix", "roc_curve", "pr_curve")
        if result.task != "regression"
        else ("predicted_vs_actual", "residuals")
    )
    if evaluation is None:
        for name in final:
            plots.skipped[name] = "no test or out-of-fold predictions of the final model"
        return plots
    y_true, scores = evaluation["y_true"], evaluation["scores"]
    classes = getattr(result.model, "classes", None)
    if result.task == "regression":
        attempt("predicted_vs_actual", lambda: predicted_vs_actual(y_true, scores, where))
        attempt("residuals", lambda: residuals(y_true, scores, where))
    else:
        attempt("confusion_matrix", lambda: confusion_matrix(y_true, scores, classes, where))
        attempt("roc_curve", lambda: roc_curves(y_true, scores, classes, where))
        attempt("pr_curve", lambda: pr_curves(y_true, scores, classes, where))
    return plots


def final_evaluation(result: SearchResult) -> tuple[dict | None, str]:
    """The final model's test predictions, else its out-of-fold ones; and which, for titles."""
    test = result.test_evaluation
    if test is not None and len(test.get("y_true", ())):
        return test, f"test split, {len(test['y_true'])} rows"
    cv = result.cv_evaluation
    if cv is not None and len(cv.get("y_true", ())):
        return cv, f"out-of-fold CV, {len(cv['y_true'])} rows: no test split"
    return None, ""
