"""What the CLI prints: decisions with reasons, leaderboards, a progress bar, the final scores."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from autodl.events import Reporter
from autodl.result import CandidateOutcome, SearchResult, leaderboard_frame
from autodl.tracking.base import redact

MAX_COLUMN_ROWS = 40
KIND_STYLE = {
    "numeric": "cyan",
    "categorical": "magenta",
    "datetime": "blue",
    "text": "green",
    "frequency": "yellow",
}


class RichReporter(Reporter):
    """Prints a search as it happens to a rich Console."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress: Progress | None = None
        self._bar = None
        self._metric = ""
        self._greater = True
        self._phase = ""
        self._baselines: list[CandidateOutcome] = []
        self._phase_started = time.monotonic()

    def dataset(self, *, source, frame, dataset, metric, metric_reason) -> None:
        c = self.console
        c.print(f"[bold]Read[/] {source}: {len(frame):,} rows x {frame.shape[1]} columns")
        if dataset.n_missing_target:
            c.print(f"  dropped {dataset.n_missing_target} rows whose target is missing")
        table = Table(title="Columns", title_justify="left", show_edge=False, pad_edge=False)
        for header in ("column", "kind", "used", "why"):
            table.add_column(header)
        columns = dataset.profile.columns
        # A wide table: every dropped column, then used ones up to the cap; the rest are counted.
        shown = [col for col in columns if not col.used][:MAX_COLUMN_ROWS]
        shown += [col for col in columns if col.used][: max(0, MAX_COLUMN_ROWS - len(shown))]
        for column in sorted(shown, key=columns.index):
            style = KIND_STYLE.get(column.kind, "dim")
            table.add_row(
                escape(column.name),
                f"[{style}]{column.kind}[/]",
                "yes" if column.used else "[dim]dropped[/]",
                escape(column.reason),
            )
        c.print(table)
        if len(columns) > len(shown):
            kinds = Counter(col.kind for col in columns if col not in shown)
            c.print(
                f"  ... and {len(columns) - len(shown)} more: "
                + ", ".join(f"{n} {k}" for k, n in kinds.items())
            )
        task = dataset.task
        classes = f"; classes: {', '.join(map(str, task.classes[:10]))}" if task.classes else ""
        more = f" and {len(task.classes) - 10} more" if task.classes and len(task.classes) > 10 else ""
        c.print(f"[bold]Task[/]: {task.kind} ({task.reason}{escape(classes)}{more}). Override with --task.")
        c.print(
            f"[bold]Metric[/]: {metric.name}, {metric.direction}d ({metric_reason}). Override with --metric."
        )
        self._metric = metric.name
        self._greater = metric.greater_is_better

    def split(self, *, n_dev, n_test, folds, repeats, stratified, grouped_by=None, ordered_by=None) -> None:
        how = "stratified " if stratified else ""
        holdout = f"{how}holdout"
        if grouped_by is not None:
            holdout = f"whole groups of '{grouped_by}'"
        elif ordered_by is not None:
            holdout = f"the latest by '{ordered_by}'"
        if n_test:
            self.console.print(
                f"[bold]Split[/]: {n_test:,} test rows set aside ({holdout}), untouched until the final score."
            )
        else:
            self.console.print(
                "[bold]Split[/]: no test split (--test-size 0): the final score is the CV estimate only."
            )
        repeat = f", repeated {repeats} times" if repeats > 1 else ""
        if ordered_by is not None:
            cv = (
                f"{folds} forward-chaining folds by '{ordered_by}' on the other {n_dev:,} rows, each scored on "
                f"later rows than it trains on (the earliest 1/{folds + 1} is never scored)"
            )
        elif grouped_by is not None:
            cv = f"{folds}-fold {how}cross-validation{repeat} on the other {n_dev:,} rows, each '{grouped_by}' in one fold"
        else:
            cv = f"{folds}-fold {how}cross-validation{repeat} on the other {n_dev:,} rows"
        self.console.print(f"       {cv}; preprocessing is fitted inside each training fold.")

    def phase(self, name: str, total: int | None, seconds_left: float | None) -> None:
        self._end_progress()
        self._phase = name
        self._phase_started = time.monotonic()
        if name == "baselines":
            self.console.print(
                f"\n[bold]Baselines[/] ({total}): scikit-learn models on the same folds, the bar to beat."
            )
        else:
            self._print_baselines()
            budget = f"{total} trials" if total else "no trial cap"
            limit = f", {seconds_left:.0f}s left of the time limit" if seconds_left is not None else ""
            self.console.print(
                f"\n[bold]Keras search[/] ({budget}{limit}); Ctrl-C stops it and keeps the best so far."
            )
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            size = total if total else max(1.0, seconds_left or 1.0)
            self._bar = self._progress.add_task(
                "trials", total=size, status="starting", by_time=not total, limit=seconds_left
            )
            self._progress.start()

    def outcome(self, outcome: CandidateOutcome, *, best, seconds_left) -> None:
        if outcome.family == "baseline":
            self._baselines.append(outcome)
            score = (
                f"{outcome.mean:.4f} ± {outcome.std:.4f}"
                if outcome.state == "complete"
                else f"[yellow]{outcome.state}[/]: {outcome.reason}"
            )
            self.console.print(f"  {outcome.name:<30} {score}  ({outcome.fit_seconds:.1f}s)")
            return
        line = (
            f"  trial {outcome.trial_number:>3}  {outcome.mean:.4f} ± {outcome.std:.4f}  ({outcome.fit_seconds:.1f}s)"
            + (f"  [dim]{escape(outcome.reason)}[/]" if outcome.reason else "")
            if outcome.state == "complete"
            else f"  trial {outcome.trial_number:>3}  [yellow]{outcome.state}[/]: {outcome.reason}"
        )
        best_text = f"best {best.name} {best.mean:.4f}" if best else "no complete candidate yet"
        left = f", {max(0.0, seconds_left):.0f}s left" if seconds_left is not None else ""
        if self._progress is not None:
            self._progress.console.print(line)
            task = self._progress.tasks[0]
            if task.fields.get("by_time"):
                done = time.monotonic() - self._phase_started
                self._progress.update(self._bar, completed=min(task.total, done), status=f"{best_text}{left}")
            else:
                self._progress.update(self._bar, advance=1, status=f"{best_text}{left}")
        else:
            self.console.print(line)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]{escape(message)}[/]")

    def info(self, message: str) -> None:
        self.console.print(escape(message))

    def finished(self, result: SearchResult, *, details: dict[str, Any]) -> None:
        self._end_progress()
        if self._phase == "baselines":
            self._print_baselines()
        c = self.console
        c.print(f"\n[bold]Stopped[/]: {result.decisions['stop_reason']}.")
        c.print(leaderboard_table(result, top=15))
        members = ", ".join(f"{name} x{weight:.2f}" for name, weight in result.final_members.items())
        how = (
            "greedy ensemble selection over out-of-fold predictions; each member averages its fold models"
            if len(result.final_members) > 1
            else "the best candidate by CV score, averaging its fold models"
        )
        c.print(
            f"[bold]Final model[/]: {result.final_name} ({members})\n  built by {how} (no refit: the fold models are the final model)."
        )
        c.print(f"[bold]CV estimate[/] {result.metric} = {result.cv_score:.4f} (out-of-fold predictions)")
        if result.decisions.get("warning"):
            c.print(f"[yellow]Warning: {escape(result.decisions['warning'])}[/]")
        if result.test_scores:
            others = ", ".join(f"{k} {v:.4f}" for k, v in result.test_scores.items() if k != result.metric)
            c.print(
                f"[bold green]Test score[/]  {result.metric} = {result.test_score:.4f}  (scored once on the held-out test rows; {others})"
            )
        c.print(f"\nSaved the model and summary to [bold]{result.output_dir}[/]")
        c.print(f"  predict:  autodl predict {result.model_dir} data.csv -o predictions.csv")
        if result.run_id:
            uri = redact(result.tracking_uri)
            c.print(f"MLflow run {result.run_id} in {uri}")
            model_uri = result.decisions.get("mlflow_model_uri")
            if model_uri:
                c.print(f"  model URI: {model_uri}")
            registered = result.decisions.get("registered_model")
            if registered:
                c.print(f"  registered as {registered['uri']} in the model registry")
            c.print(
                f"  review:   autodl ui --tracking-uri '{uri}'   (or: mlflow ui --backend-store-uri '{uri}')"
            )

    def _print_baselines(self) -> None:
        if not self._baselines:
            return
        frame = leaderboard_frame(self._baselines, self._metric, self._greater)
        if len(frame):
            self.console.print(_frame_table(frame, f"Baseline leaderboard (CV {self._metric})"))
        self._baselines = []

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def leaderboard_table(result: SearchResult, top: int = 15) -> Table:
    frame = result.leaderboard.head(top)
    return _frame_table(
        frame,
        f"Leaderboard (CV {result.metric}, {'higher' if result.greater_is_better else 'lower'} is better)",
    )


# The on-screen leaderboard fits an 80-column terminal with its longest candidate name whole
# (three HGB baselines differ only after 22 characters): short headers, and no family column,
# which the names already give (keras_trial_N). The frame itself keeps every column.
SHOWN_COLUMNS = {
    "rank": "#",
    "candidate": "candidate",
    "cv_std": "± std",
    "folds": "folds",
    "fit_seconds": "fit s",
}


def _frame_table(frame, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    shown = [c for c in frame.columns if c in SHOWN_COLUMNS or str(c).startswith("cv_")]
    for column in shown:
        numeric = frame[column].dtype.kind in "fi"
        header = SHOWN_COLUMNS.get(column, str(column).removeprefix("cv_"))  # the metric's name
        if column == "candidate":
            longest = max((len(str(name)) for name in frame[column]), default=len(header))
            table.add_column(header, no_wrap=True, min_width=longest)
        else:
            table.add_column(header, justify="right" if numeric else "left")
    for _, row in frame[shown].iterrows():
        table.add_row(*[_cell(column, value) for column, value in row.items()])
    return table


def _cell(column: str, value) -> str:
    if column == "fit_seconds":
        return f"{value:.1f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
