"""Scale: time and peak memory of a whole search on large generated tables, and how time grows.

    python -m benchmarks.scale [--rows 100000 300000 1000000] [--trials 10] [--time-limit 900]

For each size, a generated binary-classification table of N rows x 50 feature columns (40
numeric, 10 categorical with 5 to 200 labels, Zipf-like frequencies, ~5% missing values in every
other column) is written to a temporary CSV. A fresh process then runs autodl.search on the
file (tracking off, 20% test split, --trials Keras trials, --time-limit seconds) and reports
time per stage: load + profile (reading the CSV, profiling, splitting), baselines (wall, and the
sum of their fit seconds), Keras (wall, the sum of the trials' fit seconds, and seconds per
training epoch), final model; the total wall time and the process's peak RSS (target: under
6 GiB at 1M rows). Then the growth exponent b of time ~ rows**b between sizes (log-log slope;
target <= 1, linear). Records are appended to benchmarks/results/scale.jsonl; a Markdown table
goes to benchmarks/results/scale-latest.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.common import (
    RESULTS,
    ROOT,
    StageClock,
    append_jsonl,
    log_log_slope,
    machine,
    make_table,
    peak_rss_mb,
)

NUMERIC, CATEGORICAL, LEVELS, MISSING = 40, 10, (5, 200), 0.05
SEED = 0
GROWTH_KEYS = ("wall_s", "load_profile_s", "baselines_fit_s", "keras_epoch_s")


def write_table(rows: int, folder: Path) -> tuple[Path, float]:
    """Generate the N x 50 table and write it as CSV; returns the path and the seconds it took."""
    started = time.perf_counter()
    frame = make_table(
        rows, numeric=NUMERIC, categorical=CATEGORICAL, levels=LEVELS, missing=MISSING, seed=SEED
    )
    path = folder / f"scale-{rows}.csv"
    frame.to_csv(path, index=False)
    return path, time.perf_counter() - started


def run_one(
    path: Path,
    trials: int,
    time_limit: float | None,
    baselines: tuple[str, ...] | None = None,
    max_epochs: int | None = None,
) -> dict:
    """One search on `path`, in this (fresh) process; the stages' seconds and the peak RSS."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from autodl.api import search

    clock = StageClock()
    with tempfile.TemporaryDirectory(prefix="autodl-scale-") as out:
        result = search(
            path,
            target="target",
            trials=trials,
            time_limit=time_limit,
            tracking=False,
            test_size=0.2,
            output_dir=Path(out) / "run",
            reporter=clock,
            seed=SEED,
            baselines=baselines,
            max_epochs=max_epochs,
        )
    stages = clock.stages()
    wall = time.perf_counter() - clock.started
    keras = [o for o in result.outcomes if o.family == "keras"]
    baselines = [o for o in result.outcomes if o.family == "baseline"]
    details = [o.fold_details[0] for o in keras if o.fold_details]
    epochs = sum(d.get("epochs", 0) for d in details)
    train = sum(d.get("train_seconds", 0.0) for o in keras for d in o.fold_details)
    return {
        "wall_s": round(wall, 2),
        "load_profile_s": stages["prepare_s"],
        "baselines_wall_s": stages["baselines_s"],
        "baselines_fit_s": round(sum(o.fit_seconds for o in baselines), 2),
        "baselines": {
            o.name: (round(o.fit_seconds, 2) if o.state == "complete" else o.state) for o in baselines
        },
        "keras_setup_s": stages["keras_setup_s"],
        "keras_wall_s": stages["keras_s"],
        "keras_fit_s": round(sum(o.fit_seconds for o in keras), 2),
        "keras_train_s": round(train, 2),
        "keras_epochs": epochs,
        "keras_epoch_s": round(train / epochs, 4) if epochs else None,
        "finalize_s": stages["finalize_s"],
        "trials_run": len(keras),
        "trials_complete": sum(1 for o in keras if o.state == "complete"),
        "stop_reason": result.decisions.get("stop_reason"),
        "test_scores": result.test_scores,
        "cv_score": result.cv_score,
        "final_model": result.final_name,
        "final_members": {name: round(weight, 3) for name, weight in result.final_members.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def growth(records: list[dict]) -> dict:
    """Log-log slopes of each timing against rows, over the sizes that completed."""
    done = sorted((r for r in records if "error" not in r), key=lambda r: r["rows"])
    slopes = {}
    for key in GROWTH_KEYS:
        points = [(r["rows"], r[key]) for r in done if r.get(key)]
        slope = log_log_slope([p[0] for p in points], [p[1] for p in points])
        slopes[key] = None if slope is None else round(slope, 3)
    pairs = [
        {
            "from_rows": a["rows"],
            "to_rows": b["rows"],
            **{
                key: round(log_log_slope([a["rows"], b["rows"]], [a[key], b[key]]), 3)
                for key in GROWTH_KEYS
                if a.get(key) and b.get(key)
            },
        }
        for a, b in zip(done, done[1:], strict=False)
    ]
    return {"slopes": slopes, "pairs": pairs}


def write_markdown(records: list[dict], growth_record: dict | None, info: dict, path: Path) -> None:
    first = records[0]
    lines = [
        "## Scale",
        "",
        f"Measured {info['date']} on {info['cpus']} CPUs, Python {info['python']}, commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        "",
        f"Generated table: N rows x {NUMERIC + CATEGORICAL} features ({NUMERIC} numeric, {CATEGORICAL} categorical "
        f"with {LEVELS[0]}-{LEVELS[1]} labels, {MISSING:.0%} missing in every other column), binary target; "
        f"autodl.search from the CSV in a fresh process, tracking off, 20% test split, "
        f"{first['trials']} Keras trials, time limit {first['time_limit_s']} s. Peak RSS target: < 6 GiB at 1M rows.",
        "",
        "| rows | CSV MB | load + profile s | baselines s (fit sum) | Keras s (fit sum) | s / epoch | trials (complete) | "
        "final s | total wall s | peak RSS MB | stop reason |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['rows']} | {r.get('csv_mb', '')} | failed: {r['error']} | | | | | | | | |")
            continue
        epoch = f"{r['keras_epoch_s']:.3f}" if r["keras_epoch_s"] else "–"
        lines.append(
            f"| {r['rows']} | {r['csv_mb']} | {r['load_profile_s']:.1f} | {r['baselines_wall_s']:.1f} ({r['baselines_fit_s']:.1f}) | "
            f"{r['keras_wall_s']:.1f} ({r['keras_fit_s']:.1f}) | {epoch} | {r['trials_run']} ({r['trials_complete']}) | "
            f"{r['finalize_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['stop_reason']} |"
        )
    if growth_record and growth_record["slopes"]:
        lines += [
            "",
            "Growth exponent b of time ~ rows^b (log-log least squares over all sizes; target <= 1): "
            + ", ".join(
                f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f}"
                for k, v in growth_record["slopes"].items()
                if v is not None
            )
            + ". The Keras time per epoch is the fairest measure: trials stop early at different epochs, and a "
            "binding time limit caps the total.",
        ]
        for pair in growth_record["pairs"]:
            lines.append(
                f"- {pair['from_rows']} -> {pair['to_rows']} rows: "
                + ", ".join(
                    f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f}"
                    for k, v in pair.items()
                    if k.endswith("_s")
                )
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100000, 300000, 1000000])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds per search; 0 = none")
    parser.add_argument("--baselines", nargs="+", help="baselines to fit (default: all)")
    parser.add_argument(
        "--max-epochs", type=int, help="cap on training epochs per trial (default: the space's)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.jsonl")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "scale-latest.md")
    parser.add_argument("--single", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    time_limit = args.time_limit or None
    baselines = tuple(args.baselines) if args.baselines else None
    if args.single:
        print(json.dumps(run_one(args.single, args.trials, time_limit, baselines, args.max_epochs)))
        return
    info, records = machine(), []
    with tempfile.TemporaryDirectory(prefix="autodl-scale-data-") as folder:
        for rows in args.rows:
            path, generate_s = write_table(rows, Path(folder))
            base = {
                "benchmark": "scale",
                "rows": rows,
                "columns": NUMERIC + CATEGORICAL,
                "trials": args.trials,
                "time_limit_s": time_limit,
                "baselines_chosen": list(baselines) if baselines else "all",
                "max_epochs": args.max_epochs,
                "csv_mb": round(path.stat().st_size / 2**20, 1),
                "generate_s": round(generate_s, 1),
            }
            command = [
                sys.executable,
                "-m",
                "benchmarks.scale",
                "--single",
                str(path),
                "--trials",
                str(args.trials),
            ]
            command += ["--time-limit", str(args.time_limit)]
            command += ["--baselines", *baselines] if baselines else []
            command += ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            process_s = round(time.perf_counter() - started, 1)
            path.unlink()
            if done.returncode != 0:
                why = "killed (out of memory?)" if done.returncode < 0 else f"exit code {done.returncode}"
                print(f"{rows} rows: failed, {why}\n{done.stderr[-2000:]}", file=sys.stderr)
                record = {**base, "error": why, "process_s": process_s, "stderr_tail": done.stderr[-2000:]}
            else:
                record = {**base, **json.loads(done.stdout.strip().splitlines()[-1]), "process_s": process_s}
                print(
                    f"{rows:>8} rows: load+profile {record['load_profile_s']:.1f} s, baselines "
                    f"{record['baselines_wall_s']:.1f} s, Keras {record['keras_wall_s']:.1f} s "
                    f"({record['trials_complete']}/{record['trials_run']} trials), total {record['wall_s']:.1f} s, "
                    f"peak RSS {record['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            record["machine"] = info
            append_jsonl(args.output, record)
            records.append(record)
    growth_record = None
    if sum("error" not in r for r in records) >= 2:
        growth_record = {"benchmark": "scale", "part": "growth", **growth(records), "machine": info}
        append_jsonl(args.output, growth_record)
        print("growth exponents:", json.dumps(growth_record["slopes"]))
    if records:
        write_markdown(records, growth_record, info, args.markdown)
        print(f"wrote {args.output} and {args.markdown}")


if __name__ == "__main__":
    main()
