"""Quality per budget: autodl's test score at a wall-clock budget vs scikit-learn's HGB defaults.

    python -m benchmarks.quality --budget 60 [--datasets titanic wage] [--manifest PATH]

Each dataset runs in its own process (peak memory per dataset). Results are appended to
benchmarks/results/quality.jsonl and summarised in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    DEFAULT_MANIFEST,
    RESULTS,
    StageClock,
    append_jsonl,
    benchmark_split,
    load_manifest,
    machine,
    score,
)

PRIMARY = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def hgb_reference(train: pd.DataFrame, test: pd.DataFrame, target: str, task: str) -> dict:
    """scikit-learn HistGradientBoosting defaults, categoricals ordinal-encoded (the issue's reference)."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X, y = train.drop(columns=target), train[target]
    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    encode = make_column_transformer(
        (
            OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
            ),
            categorical,
        ),
        remainder="passthrough",
    )
    model = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    started = time.perf_counter()
    pipeline = make_pipeline(encode, model(random_state=0)).fit(X, y)
    seconds = time.perf_counter() - started
    if task == "regression":
        return {**score(task, test[target], pipeline.predict(test.drop(columns=target))), "seconds": seconds}
    proba = pipeline.predict_proba(test.drop(columns=target))
    return {**score(task, test[target], proba, list(pipeline.classes_)), "seconds": seconds}


def run_one(entry: dict, budget: float, keep_runs: Path | None = None) -> dict:
    """autodl on one dataset's training part with `budget` seconds; scored on the fixed test part.

    With `keep_runs` the search's output folder is kept there (under the dataset's name), so
    that its candidates' out-of-fold predictions and fold models can be studied afterwards.
    """
    from autodl.api import search

    frame = pd.read_csv(entry["path"])
    train, test = benchmark_split(frame, entry["target"], entry["task"])
    started = time.perf_counter()
    clock = StageClock()
    with tempfile.TemporaryDirectory() as out:
        result = search(
            train,
            target=entry["target"],
            time_limit=budget,
            tracking=False,
            test_size=0.0,
            output_dir=(keep_runs / entry["name"]) if keep_runs else Path(out) / "run",
            task=entry["task"],
            reporter=clock,
        )
        wall = time.perf_counter() - started
        stages = clock.stages()
        features = test.drop(columns=entry["target"])
        scores = result.model.scores(features)
        classes = list(result.model.classes) if result.model.classes else None
        autodl_scores = score(entry["task"], test[entry["target"]], scores, classes)
    reference = hgb_reference(train, test, entry["target"], entry["task"])
    return {
        "dataset": entry["name"],
        "task": entry["task"],
        "metric": PRIMARY[entry["task"]],
        "budget_s": budget,
        "autodl": autodl_scores,
        "autodl_cv": result.cv_score,
        "final_model": result.final_name,
        "members": result.final_members,
        "n_trials": sum(1 for o in result.outcomes if o.family == "keras"),
        "n_trials_complete": sum(1 for o in result.outcomes if o.family == "keras" and o.state == "complete"),
        "wall_s": round(wall, 1),
        "stages_s": stages,  # where the wall time went (see StageClock)
        "stop_reason": result.decisions.get("stop_reason"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hgb_reference": reference,
    }


def write_markdown(records: list[dict], info: dict, path: Path) -> None:
    lines = [
        f"## Quality at a {records[0]['budget_s']:.0f} s budget",
        "",
        f"Measured {info['date']} on {info['cpus']} CPUs, Python {info['python']}, commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        "",
        "| dataset | metric | autodl test | HGB defaults | better? | autodl CV | final model | Keras trials (complete) | wall s | peak RSS MB |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in records:
        metric = r["metric"]
        mine, ref = r["autodl"][metric], r["hgb_reference"][metric]
        better = mine > ref if metric == "roc_auc" else mine < ref
        lines.append(
            f"| {r['dataset']} | {metric} | {mine:.4f} | {ref:.4f} | {'yes' if better else 'no'} | {r['autodl_cv']:.4f} | "
            f"{r['final_model']} | {r['n_trials']} ({r['n_trials_complete']}) | {r['wall_s']} | {r['peak_rss_mb']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", nargs="*")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--output", type=Path, default=RESULTS / "quality.jsonl")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "quality-latest.md")
    parser.add_argument(
        "--keep-runs",
        type=Path,
        help="keep each search's output folder under this folder (for offline analysis)",
    )
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    entries = load_manifest(args.manifest)
    if args.single:
        entry = next(e for e in entries if e["name"] == args.single)
        print(json.dumps(run_one(entry, args.budget, args.keep_runs)))
        return
    chosen = [e for e in entries if not args.datasets or e["name"] in args.datasets]
    info, records = machine(), []
    for entry in chosen:
        command = [
            sys.executable,
            "-m",
            "benchmarks.quality",
            "--single",
            entry["name"],
            "--budget",
            str(args.budget),
            "--manifest",
            str(args.manifest),
            *(["--keep-runs", str(args.keep_runs.resolve())] if args.keep_runs else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{entry['name']}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        record = {**json.loads(done.stdout.strip().splitlines()[-1]), "machine": info}
        append_jsonl(args.output, record)
        records.append(record)
        metric = record["metric"]
        print(
            f"{entry['name']:<18} {metric:<8} autodl {record['autodl'][metric]:.4f}  HGB {record['hgb_reference'][metric]:.4f}  ({record['wall_s']} s)",
            flush=True,
        )
    if records:
        write_markdown(records, info, args.markdown)


if __name__ == "__main__":
    main()
