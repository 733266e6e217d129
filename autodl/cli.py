"""The `autodl` command: a thin typer layer over the same core as the Python API.

Heavy libraries are imported inside the commands so `autodl --help` stays fast.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from autodl.errors import AutodlError

app = typer.Typer(
    name="autodl",
    help="AutoML for deep learning on tabular data: point it at a CSV, get the best model it can find, "
    "with every step reviewable in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
spaces_app = typer.Typer(help="List, show and validate search spaces.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
err = Console(stderr=True)


@app.command()
def search(
    data: Annotated[Path, typer.Argument(help="CSV (optionally .gz) or Parquet file with a header row.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Column to predict.")],
    task: Annotated[
        str | None,
        typer.Option(help="binary, multiclass or regression (default: detected from the target)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Metric to optimise. Default: roc_auc (binary), log_loss (multiclass), rmse (regression)."
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            help="Number of Keras trials (default: as many as the time limit allows; 0 = baselines only)."
        ),
    ] = None,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="Wall-clock budget of the search in seconds, counted from the command's start and honoured inside trials too; it covers loading the data, the final model, its test score and MLflow logging.",
        ),
    ] = 120.0,
    folds: Annotated[int, typer.Option(help="Number of CV folds (stratified for classification).")] = 5,
    repeats: Annotated[
        int, typer.Option(help="Repeat k-fold this many times with reshuffling (iterated k-fold).")
    ] = 1,
    test_size: Annotated[
        float,
        typer.Option("--test-size", help="Share of rows held out for the final, one-time test score."),
    ] = 0.2,
    group_column: Annotated[
        str | None,
        typer.Option(
            "--group-column",
            help="Keep each group's rows together (a person, a store): whole groups go to the test rows or to "
            "one fold, so scores are those of new groups. Used for the split only, not as a feature.",
        ),
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            help="Order rows by this column (dates or numbers): the test rows are the latest, and each fold is "
            "scored on rows later than those it trains on (forward chaining). It stays a feature.",
        ),
    ] = None,
    space: Annotated[
        str, typer.Option(help="Search space: a shipped name (autodl spaces list) or a .yaml file.")
    ] = "mlp",
    sampler: Annotated[
        str, typer.Option(help="Optuna sampler: tpe (multivariate), random, cmaes, gp (needs PyTorch).")
    ] = "tpe",
    pruner: Annotated[
        str,
        typer.Option(
            help="Optuna pruner over training epochs: median, hyperband, successive_halving, none; or wilcoxon over per-fold scores (folds then train separately)."
        ),
    ] = "median",
    capacity_check: Annotated[
        bool,
        typer.Option(
            "--capacity-check/--no-capacity-check",
            help="First check that the space's largest network can overfit a small sample.",
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            help="Trials run at once, each in its own process (one per CPU core is the most that helps)."
        ),
    ] = 1,
    trials_per_process: Annotated[
        int,
        typer.Option(
            "--trials-per-process",
            help="Keras trials one process runs before a fresh process takes over the search "
            "(TensorFlow keeps memory for every network shape it has run; this bounds it).",
        ),
    ] = 50,
    max_epochs: Annotated[
        int | None,
        typer.Option("--max-epochs", help="Cap on epochs per network (default: from the space)."),
    ] = None,
    baselines: Annotated[
        str | None,
        typer.Option(help="Comma-separated baselines to fit, or 'none' (default: all that suit the data)."),
    ] = None,
    drop: Annotated[list[str] | None, typer.Option("--drop", help="Column to ignore (repeatable).")] = None,
    final: Annotated[
        str,
        typer.Option(help="'ensemble': greedy blend of the best candidates; 'best': the single best."),
    ] = "ensemble",
    seed: Annotated[int, typer.Option(help="Random seed for splits, sampler and networks.")] = 0,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the model and summary (default: a new folder in autodl-runs/).",
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's default local SQLite file).",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "autodl",
    register_model: Annotated[
        str | None,
        typer.Option(
            "--register-model", help="Register the final model in the MLflow model registry under this name."
        ),
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the CSV.")] = "utf-8",
    resume: Annotated[
        bool, typer.Option(help="Continue the search stored in --output instead of starting anew.")
    ] = False,
) -> None:
    """Search for the best model for TARGET in DATA: baselines, then Keras networks tuned by Optuna."""
    started = time.monotonic()  # the time limit covers the imports below (~1.5 s) too
    from autodl.config import SearchConfig

    config = SearchConfig(
        target=target,
        task=task,
        metric=metric,
        test_size=test_size,
        folds=folds,
        repeats=repeats,
        trials=trials,
        time_limit=time_limit,
        space=space,
        sampler=sampler,
        pruner=pruner,
        capacity_check=capacity_check,
        workers=workers,
        trials_per_process=trials_per_process,
        max_epochs=max_epochs,
        baselines=_parse_baselines(baselines),
        drop_columns=tuple(drop or ()),
        group_column=group_column,
        time_column=time_column,
        final=final,
        seed=seed,
        output_dir=output,
        tracking=not no_tracking,
        tracking_uri=tracking_uri,
        experiment=experiment,
        register_model=register_model,
        resume=resume,
        extra={"delimiter": delimiter, "encoding": encoding},
    )
    from autodl.api import make_tracker
    from autodl.orchestrate import run_search
    from autodl.report import RichReporter
    from autodl.runtime import install_interrupt_handlers

    install_interrupt_handlers()  # Ctrl-C, and a polite kill (SIGTERM) alike: work is kept
    result = run_search(config, data, reporter=RichReporter(), tracker=make_tracker(config), started=started)
    if result.interrupted:
        raise typer.Exit(130)


def _parse_baselines(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Argument(help="Model folder from autodl search, or an MLflow URI (runs:/..., models:/...)."),
    ],
    data: Annotated[
        Path,
        typer.Argument(help="CSV or Parquet file with the training columns (the target may be absent)."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the predictions (CSV).")
    ] = Path("predictions.csv"),
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ URIs."),
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
) -> None:
    """Predict with a saved model: class labels and per-class probabilities, or values."""
    import warnings

    from autodl import runtime

    runtime.configure()
    if tracking_uri:
        import os

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from autodl.data.load import read_table
    from autodl.serve import load_predictor

    frame = read_table(data, delimiter=delimiter)
    predictor = load_predictor(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        predictions = predictor(frame)
    for warning in caught:
        if "ignoring" in str(warning.message):
            err.print(f"[yellow]warning:[/] {warning.message}")
    predictions.to_csv(output, index=False)
    Console().print(f"Wrote {len(predictions):,} predictions to {output}")


@spaces_app.command("list")
def spaces_list() -> None:
    """List the shipped search spaces."""
    from autodl.spaces import list_spaces

    for name, description in list_spaces().items():
        Console().print(f"[bold]{name}[/]: {description}")


@spaces_app.command("show")
def spaces_show(
    name: Annotated[str, typer.Argument(help="A shipped space name or a .yaml path.")],
) -> None:
    """Print a search space's parameters, fixed settings and defaults."""
    from autodl.spaces import load_space

    space = load_space(name)
    console = Console()
    console.print(f"[bold]{space.name}[/] ({space.source}): {space.description}")
    for param in space.params:
        if param.type == "categorical":
            domain = f"one of {list(param.choices)}"
        else:
            domain = f"{param.type} {param.low}..{param.high}{' (log)' if param.log else ''}"
        extras = (" per layer" if param.per_layer else "") + (f" when {param.when}" if param.when else "")
        console.print(f"  {param.name}: {domain}{extras}")
    console.print(f"  fixed: {space.fixed}")
    console.print(f"  defaults: {space.defaults}")


@spaces_app.command("validate")
def spaces_validate(
    path: Annotated[Path, typer.Argument(help="A search-space .yaml file.")],
) -> None:
    """Check a search-space file; prints the first problem and its fix."""
    from autodl.spaces import load_space

    space = load_space(path)
    Console().print(f"{path}: valid space '{space.name}' with {len(space.params)} parameters")


@app.command()
def ui(
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="Store to show (default: the one autodl search uses)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; only change it if you mean to expose the UI.")
    ] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="Server worker processes (one is plenty for one user).")] = 1,
    experiment: Annotated[str, typer.Option(help="Experiment to link to directly.")] = "autodl",
) -> None:
    """Start the MLflow UI on the store that autodl search uses (bound to 127.0.0.1)."""
    import os
    import socket
    import subprocess

    from autodl import runtime

    runtime.configure()
    from autodl.errors import ConfigError
    from autodl.tracking.base import redact
    from autodl.tracking.mlflow import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    console = Console()
    if uri.startswith(("http://", "https://")):
        console.print(f"{redact(uri)} is an MLflow tracking server: open it in a browser, it serves the UI.")
        return
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():
            err.print(
                f"[yellow]note:[/] {database.resolve()} does not exist yet; the UI starts on an empty store."
            )
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({error.strerror or error})",
                f"pass another --port, e.g. --port {port + 1}, or stop what uses port {port}",
            ) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] binding to {host} makes the UI reachable from other machines.")
    shown = f"[{host}]" if ":" in host else host
    console.print(f"MLflow UI for {redact(uri)} at http://{shown}:{port}  (Ctrl-C to stop)", soft_wrap=True)
    found = _experiment_id(uri, experiment)
    if found is not None:  # the runs table, in the UI's "Model training" view (its default is GenAI)
        link = f"http://{shown}:{port}/#/experiments/{found}/runs?workflowType=machine_learning"
        console.print(f"  searches of experiment '{experiment}': {link}", soft_wrap=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", str(max(1, workers))]
    # MLflow's job runner (GenAI evaluation jobs: several extra worker processes) is not needed to
    # review searches; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true in the environment turns it back on.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def _experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment `name` in the store at `uri`, or None (missing, or the store unreadable)."""
    try:
        from mlflow import MlflowClient

        found = MlflowClient(uri).get_experiment_by_name(name)
    except Exception:
        return None
    return found.experiment_id if found is not None else None


def runs(
    experiment: Annotated[
        str | None, typer.Option(help="Only this MLflow experiment (default: every experiment).")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="Store to read (default: the one autodl search uses)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many searches, newest first.")] = 20,
) -> None:
    """List past searches in the MLflow store: task, metric, CV and test scores, final model, status."""
    from autodl.runs import list_searches, searches_table
    from autodl.tracking.base import redact

    uri, found = list_searches(tracking_uri=tracking_uri, experiment=experiment, limit=limit)
    console = Console()
    if not found:
        console.print(f"No autodl searches in {redact(uri)} yet (run autodl search first).")
        return
    table, narrow = searches_table(found, f"autodl searches in {redact(uri)} (newest first)", console.width)
    console.print(table)
    console.print("Open one: autodl ui, or load its model with the run's autodl.model_uri tag.")
    if narrow:
        console.print("Task and run id columns left out to fit; widen the terminal to see them.")
    newest = next((s for s in found if s.model_uri), None)
    if newest is not None:
        store = f" --tracking-uri {redact(tracking_uri)}" if tracking_uri else ""
        console.print(f"Newest model: autodl predict {newest.model_uri} DATA.csv{store}", soft_wrap=True)


app.command("runs")(runs)
app.command("leaderboard", help="Alias of `autodl runs`: past searches and their best results.")(runs)


URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it (scheme://user:password@host) replaced by '***'."""
    return URL_PASSWORD.sub(r"\1***@", text)


def run() -> None:
    """The `autodl` console script: `main()`, then, when a command loaded TensorFlow, an exit
    without the interpreter's slow teardown of it (see runtime.exit_without_teardown)."""
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    if "tensorflow" not in sys.modules or not isinstance(code, int | None):
        sys.exit(code)
    from autodl.runtime import exit_without_teardown

    exit_without_teardown(code or 0)


def main() -> None:
    """Entry point: one-line errors with exit code 2 for bad input, never a traceback."""
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) inside a command comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as done:  # --help, or typer.Exit from a command
        sys.exit(done.exit_code)
    except typer.Abort:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except AutodlError as error:
        err.print(
            f"[bold red]error:[/] {escape(hide_passwords(str(error)))}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as error:
        if _is_usage_error(error):  # a bad flag or value: one line, like autodl's own errors
            _print_usage_error(error)
            sys.exit(2)
        # An internal bug: keep the traceback in a file, not on screen.
        with tempfile.NamedTemporaryFile("w", prefix="autodl-crash-", suffix=".log", delete=False) as log:
            log.write(hide_passwords(traceback.format_exc()))
        first = hide_passwords(str(error).splitlines()[0]) if str(error) else ""
        err.print(
            f"[bold red]internal error:[/] {type(error).__name__}: {escape(first)}. "
            f"Details in {escape(log.name)}; please report it.",
            soft_wrap=True,
            highlight=False,
        )
        sys.exit(1)


def _is_usage_error(error: Exception) -> bool:
    # click's UsageError (vendored by recent typer, so matched by its shape, not its class)
    return hasattr(error, "format_message") and getattr(error, "exit_code", None) == 2


def _print_usage_error(error: Exception) -> None:
    message = error.format_message().strip().rstrip(".")
    if not message:  # no arguments at all: the help has been printed already
        return
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "autodl"
    err.print(
        f"[bold red]error:[/] {escape(message)}. Fix: see '{escape(command)} --help'.",
        soft_wrap=True,
        highlight=False,
    )


if __name__ == "__main__":
    run()
