"""Training efficiency: what one 5-fold CV trial costs next to one fit, and where a search's time goes.

    python -m benchmarks.efficiency [--rows 5000 20000 100000] [--epochs 10] [--repeats 3]

On generated binary-classification tables (20 numeric + 2 categorical columns, seeded), with one
fixed MLP (2x128, adam, batch 128) and early stopping off (patience = max_epochs = --epochs),
so every variant trains the same number of epochs:

- towers: one 5-fold CV trial as autodl runs it (cross_validate_towers: one k-tower model);
- single: one fit of the same network on one fold's training rows (~80%), plus scoring its fold;
- naive:  5 separate fits (autodl.tuning.cv.cross_validate over a keras_candidate).

(--folds changes the 5; the smoke test uses 2 to stay quick.)

Reported per size: medians over --repeats of each one's seconds, the ratios towers/single
(target <= 1.5) and naive/single, the single fit's time per epoch and per step, and the share
of the towers' wall time spent outside `combined.fit` (preprocessing, build, compile, scoring).
Then `autodl --help` start-up time (median of 3 fresh processes; target < 1 s) and whether it
imports TensorFlow, and the share of a small whole search's wall time spent outside training
(autodl.search on the --search-rows table, --search-trials trials, MLflow tracking on a fresh
temporary SQLite store; training = the trials' time inside `combined.fit` + the baselines'
fit seconds). Records are appended to benchmarks/results/efficiency.jsonl; a Markdown table
goes to benchmarks/results/efficiency-latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT, StageClock, append_jsonl, machine, make_table, peak_rss_mb

FOLDS = 5
SEED = 0
CONFIG = {
    "n_layers": 2,
    "units": 128,
    "activation": "relu",
    "dropout": 0.0,
    "batch_norm": False,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": "constant",
    "batch_size": 128,
}
HEAVY_MODULES = ("tensorflow", "keras", "mlflow", "keras_tuner", "sklearn", "optuna", "pandas")


def dev_data(rows: int, seed: int = SEED, folds: int = FOLDS):
    """The generated table as autodl's DevData (all rows are development rows), and its metric."""
    from autodl.data.dataset import build_dataset
    from autodl.metrics import resolve_metric
    from autodl.split import make_folds
    from autodl.tuning.cv import DevData

    frame = make_table(rows, numeric=20, categorical=2, levels=(5, 20), seed=seed)
    dataset = build_dataset(frame, target="target", task="binary", folds=folds, test_size=0.0)
    splits = make_folds(dataset.y, folds=folds, repeats=1, stratify=True, seed=seed)
    data = DevData(
        dataset.features, dataset.y, splits, dataset.profile, dataset.task.kind, dataset.task.n_classes
    )
    return data, resolve_metric(dataset.task.kind, None)


def fixed_settings(epochs: int) -> dict:
    return {"max_epochs": epochs, "patience": epochs, "validation_fraction": 0.15}


@contextlib.contextmanager
def side_by_side_towers():
    """The earlier tower layout (k separate networks in one multi-input model), for before/after."""
    from autodl.candidates import keras_towers
    from autodl.runtime import import_keras

    stacked = keras_towers._Stacked
    keras_towers._Stacked = lambda params, inputs, task, n_classes: keras_towers._SideBySide(
        import_keras(),
        params,
        [inputs.dense(i) for i in range(inputs.towers)],
        task,
        n_classes,
        [()] * inputs.towers,
    )
    try:
        yield
    finally:
        keras_towers._Stacked = stacked


def run_towers(data, metric, epochs: int, layout: str = "stacked") -> dict:
    from autodl.candidates.keras_towers import cross_validate_towers
    from autodl.runtime import import_keras

    import_keras().backend.clear_session(free_memory=True)
    with side_by_side_towers() if layout == "side_by_side" else contextlib.nullcontext():
        result = cross_validate_towers(CONFIG, fixed_settings(epochs), data, metric, seed=SEED)
    detail = result.fold_details[0]
    return {
        "seconds": result.fit_seconds,
        "train_seconds": sum(d["train_seconds"] for d in result.fold_details),
        "epochs": detail["epochs"],
        "cv_score": result.mean,
    }


def run_single(data, metric, epochs: int) -> dict:
    """One fit of the same network on fold 0's training rows, scored on fold 0's held-out rows."""
    from autodl.candidates.base import predict_scores
    from autodl.candidates.keras_model import KerasTabularModel, inner_split
    from autodl.preprocess import build_preprocessor
    from autodl.runtime import import_keras

    import_keras().backend.clear_session(free_memory=True)
    fold = data.folds[0]
    fixed = fixed_settings(epochs)
    started = time.perf_counter()
    preprocess = build_preprocessor(data.profile, "dense").fit(data.features.iloc[fold.train])
    X = preprocess.transform(data.features.iloc[fold.train])
    model = KerasTabularModel(
        task=data.task,
        n_classes=data.n_classes,
        params=CONFIG,
        max_epochs=epochs,
        patience=epochs,
        validation_fraction=fixed["validation_fraction"],
        seed=SEED,
    )
    fit_started = time.perf_counter()
    model.fit(X, data.y[fold.train])
    fit_seconds = time.perf_counter() - fit_started
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("preprocess", preprocess), ("model", model)])
    score = metric(
        data.y[fold.valid], predict_scores(pipeline, data.features.iloc[fold.valid], data.n_classes)
    )
    seconds = time.perf_counter() - started
    train_rows = len(
        inner_split(data.y[fold.train], task=data.task, fraction=fixed["validation_fraction"], seed=SEED)[0]
    )
    batch = int(min(CONFIG["batch_size"], max(8, train_rows)))
    steps = math.ceil(train_rows / batch)
    trained = model.epochs_trained_
    return {
        "seconds": seconds,
        "fit_seconds": fit_seconds,
        "epochs": trained,
        "steps_per_epoch": steps,
        "epoch_seconds": fit_seconds / trained,
        "step_ms": 1000 * fit_seconds / (trained * steps),
        "features_in": int(X.shape[1]),
        "score": score,
    }


def run_naive(data, metric, epochs: int) -> dict:
    from autodl.candidates.keras_model import keras_candidate
    from autodl.runtime import import_keras
    from autodl.tuning.cv import cross_validate

    import_keras().backend.clear_session(free_memory=True)
    candidate = keras_candidate(
        "naive",
        CONFIG,
        fixed=fixed_settings(epochs),
        task=data.task,
        n_classes=data.n_classes,
        seed=SEED,
    )
    result = cross_validate(candidate, data, metric)
    return {
        "seconds": result.fit_seconds,
        "epochs": [d["epochs"] for d in result.fold_details],
        "cv_score": result.mean,
    }


def cv_cost(rows: int, epochs: int, repeats: int, folds: int = FOLDS) -> dict:
    """Towers vs single vs naive on one table size; medians over `repeats`."""
    data, metric = dev_data(rows, folds=folds)
    runs = []
    for _ in range(repeats):
        towers = run_towers(data, metric, epochs)
        side_by_side = run_towers(data, metric, epochs, layout="side_by_side")
        single = run_single(data, metric, epochs)
        naive = run_naive(data, metric, epochs)
        runs.append({"towers": towers, "side_by_side": side_by_side, "single": single, "naive": naive})
        print(
            f"  {rows} rows: towers {towers['seconds']:.1f} s (side by side {side_by_side['seconds']:.1f} s), "
            f"single {single['seconds']:.1f} s, naive {naive['seconds']:.1f} s",
            flush=True,
        )

    def med(part: str, key: str) -> float:
        return float(np.median([r[part][key] for r in runs]))

    def med_ratio(part: str) -> float:
        return float(np.median([r[part]["seconds"] / r["single"]["seconds"] for r in runs]))

    outside = [1 - r["towers"]["train_seconds"] / r["towers"]["seconds"] for r in runs]
    return {
        "benchmark": "efficiency",
        "part": "cv_cost",
        "rows": rows,
        "folds": folds,
        "epochs": epochs,
        "repeats": repeats,
        "config": CONFIG,
        "features_in": runs[0]["single"]["features_in"],
        "towers_s": round(med("towers", "seconds"), 3),
        "single_s": round(med("single", "seconds"), 3),
        "naive_s": round(med("naive", "seconds"), 3),
        "side_by_side_s": round(med("side_by_side", "seconds"), 3),
        "towers_over_single": round(med_ratio("towers"), 3),
        "side_by_side_over_single": round(med_ratio("side_by_side"), 3),
        "naive_over_single": round(med_ratio("naive"), 3),
        "naive_over_towers": round(
            float(np.median([r["naive"]["seconds"] / r["towers"]["seconds"] for r in runs])), 3
        ),
        "single_fit_s": round(med("single", "fit_seconds"), 3),
        "single_epoch_s": round(med("single", "epoch_seconds"), 4),
        "single_step_ms": round(med("single", "step_ms"), 3),
        "single_steps_per_epoch": runs[0]["single"]["steps_per_epoch"],
        "towers_train_s": round(med("towers", "train_seconds"), 3),
        "towers_epoch_s": round(
            float(np.median([r["towers"]["train_seconds"] / r["towers"]["epochs"] for r in runs])), 4
        ),
        "towers_outside_fit_share": round(float(np.median(outside)), 4),
        "epochs_trained": {
            "towers": runs[0]["towers"]["epochs"],
            "single": runs[0]["single"]["epochs"],
            "naive": runs[0]["naive"]["epochs"],
        },
        "scores": {
            "towers_cv": round(med("towers", "cv_score"), 4),
            "side_by_side_cv": round(med("side_by_side", "cv_score"), 4),
            "naive_cv": round(med("naive", "cv_score"), 4),
            "single_fold0": round(med("single", "score"), 4),
        },
        "samples_s": {
            part: [round(r[part]["seconds"], 3) for r in runs]
            for part in ("towers", "side_by_side", "single", "naive")
        },
    }


def startup(runs: int = 3) -> dict:
    """`autodl --help` wall time in fresh processes, and which heavy modules it imports."""
    script = Path(sys.executable).with_name("autodl")
    command = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "autodl.cli", "--help"]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-1000:]}")
    probe = (
        "import json, sys\n"
        "sys.argv = ['autodl', '--help']\n"
        "from autodl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "benchmark": "efficiency",
        "part": "startup",
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
        "help_s": round(float(np.median(seconds)), 3),
        "help_s_samples": [round(s, 3) for s in seconds],
        "heavy_modules_loaded": loaded,
        "imports_tensorflow": "tensorflow" in loaded or "keras" in loaded,
    }


def search_share(rows: int, trials: int, repeats: int, baselines: tuple[str, ...] | None = None) -> dict:
    """A small whole search with tracking on: how much of its wall time is training.

    This is `autodl.search()` taken apart (config, tracker, run_search) so that starting the
    MLflow tracker (import, store creation) is timed on its own.
    """
    from autodl.api import make_tracker
    from autodl.config import SearchConfig
    from autodl.orchestrate import run_search
    from autodl.tracking.store_seed import cache_dir

    frame = make_table(rows, numeric=20, categorical=2, levels=(5, 20), seed=SEED)
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="autodl-efficiency-") as tmp, contextlib.chdir(tmp):
            store = "copied from the cache" if any(cache_dir().glob("mlflow-*.db")) else "made by MLflow"
            started = time.perf_counter()
            config = SearchConfig(
                target="target",
                trials=trials,
                time_limit=None,
                tracking=True,
                tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
                experiment="efficiency",
                output_dir=Path(tmp) / "run",
                pruner="none",  # a pruned trial reports no training time; keep the accounting exact
                baselines=baselines,
                seed=SEED,
            )
            tracker = make_tracker(config)
            clock = StageClock()
            result = run_search(config, frame, reporter=clock, tracker=tracker)
            wall = time.perf_counter() - started
            stages = {"tracker_init_s": round(clock.started - started, 3), **clock.stages()}
        keras = [o for o in result.outcomes if o.family == "keras"]
        fitted = [o for o in result.outcomes if o.family == "baseline"]
        train = sum(d.get("train_seconds", 0.0) for o in keras for d in o.fold_details)
        trial_fit = sum(o.fit_seconds for o in keras)
        baseline_fit = sum(o.fit_seconds for o in fitted)
        runs.append(
            {
                "wall_s": wall,
                "trials_train_s": train,
                "trials_fit_s": trial_fit,
                "baselines_fit_s": baseline_fit,
                "outside_share": 1 - (train + baseline_fit) / wall,
                "stages": stages,
                "trials_complete": sum(1 for o in keras if o.state == "complete"),
                "store": store,
            }
        )
        print(
            f"  search on {rows} rows: {wall:.1f} s, {runs[-1]['outside_share']:.0%} outside training",
            flush=True,
        )

    def med(key: str) -> float:
        return round(float(np.median([r[key] for r in runs])), 3)

    return {
        "benchmark": "efficiency",
        "part": "search",
        "rows": rows,
        "trials": trials,
        "repeats": repeats,
        "tracking": "mlflow sqlite (new store)",
        # a new store is a copy of autodl's cached empty store once one search has made it
        "samples_store": [r["store"] for r in runs],
        "pruner": "none",
        "baselines": list(baselines) if baselines else "all",
        "wall_s": med("wall_s"),
        "trials_train_s": med("trials_train_s"),
        "trials_fit_s": med("trials_fit_s"),
        "baselines_fit_s": med("baselines_fit_s"),
        "outside_training_share": round(float(np.median([r["outside_share"] for r in runs])), 4),
        "trials_complete": min(r["trials_complete"] for r in runs),
        "stages_s": {
            k: round(float(np.median([r["stages"][k] for r in runs])), 3) for k in runs[0]["stages"]
        },
        "samples_wall_s": [round(r["wall_s"], 3) for r in runs],
        # per search, in order (the first in a process also pays the imports)
        "samples_outside_share": [round(r["outside_share"], 4) for r in runs],
        "samples_training_s": [round(r["trials_train_s"] + r["baselines_fit_s"], 3) for r in runs],
        "samples_stages_s": [r["stages"] for r in runs],
    }


def quiet() -> None:
    """Keep the benchmark's output to its results: TensorFlow retracing notes and library warnings off."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def write_markdown(records: list[dict], info: dict, path: Path) -> None:
    lines = [
        "## Training efficiency",
        "",
        f"Measured {info['date']} on {info['cpus']} CPUs, Python {info['python']}, commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        "",
    ]
    costs = [r for r in records if r["part"] == "cv_cost"]
    if costs:
        first = costs[0]
        lines += [
            f"One {first['folds']}-fold CV trial vs one fit of the same MLP (2x128, adam, batch 128), "
            f"{first['epochs']} epochs, no early stopping; medians of {first['repeats']} (ratios: median of "
            "per-repeat ratios). Target: towers/single <= 1.5.",
            "",
            "towers = the stacked k-tower network autodl uses; side by side = the earlier layout (k separate "
            "networks in one multi-input model), measured in the same run for before/after.",
            "",
            "| rows | features in | towers s | side by side s | single s | naive s | towers / single | "
            "side by side / single | naive / single | "
            "single s/epoch | single ms/step | steps/epoch | towers s/epoch | towers outside fit | CV AUC towers / naive |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in costs:
            lines.append(
                f"| {r['rows']} | {r['features_in']} | {r['towers_s']:.2f} | {r.get('side_by_side_s', float('nan')):.2f} | "
                f"{r['single_s']:.2f} | {r['naive_s']:.2f} | {r['towers_over_single']:.2f}x | "
                f"{r.get('side_by_side_over_single', float('nan')):.2f}x | {r['naive_over_single']:.2f}x | {r['single_epoch_s']:.3f} | "
                f"{r['single_step_ms']:.2f} | {r['single_steps_per_epoch']} | {r['towers_epoch_s']:.3f} | "
                f"{r['towers_outside_fit_share']:.0%} | {r['scores']['towers_cv']:.4f} / {r['scores']['naive_cv']:.4f} |"
            )
        lines.append("")
    for r in records:
        if r["part"] == "startup":
            lines += [
                f"`autodl --help`: {r['help_s']:.2f} s (median of {len(r['help_s_samples'])} fresh processes; "
                f"target < 1 s); imports TensorFlow: {'yes' if r['imports_tensorflow'] else 'no'} "
                f"(heavy modules loaded: {', '.join(r['heavy_modules_loaded']) or 'none'}).",
                "",
            ]
        if r["part"] == "search":
            stages = ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in r["stages_s"].items())
            lines += [
                f"Whole search on {r['rows']} rows, {r['trials']} trials (pruner off), MLflow tracking on a new SQLite "
                f"store ({', '.join(r.get('samples_store', []))}), median of {r['repeats']}: wall {r['wall_s']:.1f} s; training {r['trials_train_s'] + r['baselines_fit_s']:.1f} s "
                f"(trials inside `fit` {r['trials_train_s']:.1f} s of their {r['trials_fit_s']:.1f} s, baselines {r['baselines_fit_s']:.1f} s); "
                f"**{r['outside_training_share']:.1%} of wall time outside training** (target < 10%).",
                "",
                f"Stages, s: {stages}.",
                "",
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=FOLDS, help="CV folds of the CV-cost part")
    parser.add_argument("--search-rows", type=int, default=5000, help="table size of the whole-search part")
    parser.add_argument("--search-trials", type=int, default=5)
    parser.add_argument(
        "--search-baselines", nargs="+", help="baselines of the whole-search part (default: all)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["cv", "startup", "search"], help="parts to leave out"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "efficiency.jsonl")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "efficiency-latest.md")
    args = parser.parse_args(argv)

    from autodl import runtime

    quiet()
    runtime.configure()  # the thread settings a search uses, before TensorFlow loads
    info, records = machine(), []

    def keep(record: dict) -> None:
        record = {**record, "peak_rss_mb": peak_rss_mb(), "machine": info}
        append_jsonl(args.output, record)
        records.append(record)

    if "startup" not in args.skip:
        keep(startup())
        print(
            f"autodl --help: {records[-1]['help_s']:.2f} s, imports TensorFlow: {records[-1]['imports_tensorflow']}",
            flush=True,
        )
    if "cv" not in args.skip:
        # Process-wide one-time costs (TensorFlow start, first tracings) are paid before timing.
        warm_data, warm_metric = dev_data(200, seed=1, folds=args.folds)
        run_towers(warm_data, warm_metric, 1)
        run_single(warm_data, warm_metric, 1)
        for rows in args.rows:
            record = cv_cost(rows, args.epochs, args.repeats, args.folds)
            keep(record)
            print(
                f"{rows:>7} rows: towers/single {record['towers_over_single']:.2f}x, naive/single "
                f"{record['naive_over_single']:.2f}x, {record['single_step_ms']:.2f} ms/step",
                flush=True,
            )
    if "search" not in args.skip:
        baselines = tuple(args.search_baselines) if args.search_baselines else None
        keep(search_share(args.search_rows, args.search_trials, args.repeats, baselines))
    write_markdown(records, info, args.markdown)
    print(f"wrote {args.output} and {args.markdown}")


if __name__ == "__main__":
    main()
