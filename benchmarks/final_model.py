"""Refit vs fold ensemble: which final model scores better on the held-out test split?

    python -m benchmarks.final_model [--datasets titanic wage ...]

For each dataset (fixed 25% test split, seed 0) and candidate (HGB tuned, random forest, the
default Keras MLP), the 5 fold models of the CV are averaged ("folds"), and the same candidate
is refitted once on all development rows ("refit"; a network trains for the mean best epoch
of its folds, scaled by 5/4 for the extra data). Both are scored on the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    DEFAULT_MANIFEST,
    RESULTS,
    append_jsonl,
    benchmark_split,
    load_manifest,
    machine,
    score,
)

DEFAULT_DATASETS = ("titanic", "credit_data", "wine_quality_red", "wage", "bikeshare", "diabetes")


def compare(entry: dict) -> list[dict]:
    from autodl.candidates.base import predict_scores
    from autodl.candidates.baselines import baseline_candidates
    from autodl.candidates.keras_model import keras_candidate
    from autodl.data.dataset import build_dataset
    from autodl.metrics import resolve_metric
    from autodl.spaces import load_space
    from autodl.spaces.suggest import defaults_point
    from autodl.split import make_folds
    from autodl.tuning.cv import DevData, cross_validate

    frame = pd.read_csv(entry["path"])
    train, test = benchmark_split(frame, entry["target"], entry["task"])
    ds = build_dataset(train, target=entry["target"], task=entry["task"])
    folds = make_folds(ds.y, folds=5, repeats=1, stratify=ds.task.is_classification, seed=0)
    dev = DevData(ds.features, ds.y, folds, ds.profile, ds.task.kind, ds.task.n_classes)
    metric = resolve_metric(ds.task.kind, None)
    space = load_space("mlp")
    baselines = {c.name: c for c in baseline_candidates(ds.task.kind, len(train), 0)}
    keras = keras_candidate(
        "keras_default",
        defaults_point(space),
        fixed=space.fixed,
        task=ds.task.kind,
        n_classes=ds.task.n_classes,
        seed=0,
    )
    test_X, test_y = test.drop(columns=entry["target"]), test[entry["target"]]
    classes = list(ds.task.classes) if ds.task.classes else None
    records = []
    for candidate in (baselines["hist_gradient_boosting_tuned"], baselines["random_forest"], keras):
        cv = cross_validate(candidate, dev, metric)
        folds_pred = np.mean([predict_scores(p, test_X, ds.task.n_classes) for p in cv.models], axis=0)
        if candidate.family == "keras":
            epochs = int(np.ceil(np.mean([d["best_epoch"] for d in cv.fold_details]) * 5 / 4))
            fixed = {**space.fixed, "max_epochs": epochs, "patience": epochs, "validation_fraction": 0.0}
            candidate = keras_candidate(
                "keras_refit",
                defaults_point(space),
                fixed=fixed,
                task=ds.task.kind,
                n_classes=ds.task.n_classes,
                seed=0,
            )
        refit = candidate.make_pipeline(ds.profile).fit(ds.features, ds.y)
        refit_pred = predict_scores(refit, test_X, ds.task.n_classes)
        records.append(
            {
                "dataset": entry["name"],
                "candidate": candidate.name.replace("_refit", "_default"),
                "metric": metric.name,
                "folds": score(ds.task.kind, test_y, folds_pred, classes),
                "refit": score(ds.task.kind, test_y, refit_pred, classes),
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="*", default=list(DEFAULT_DATASETS))
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--output", type=Path, default=RESULTS / "final_model.jsonl")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "final_model-latest.md")
    args = parser.parse_args()
    info = machine()
    rows = [
        "| dataset | candidate | metric | fold ensemble | refit | better |",
        "|---|---|---|---:|---:|---|",
    ]
    for entry in load_manifest(args.manifest):
        if entry["name"] not in args.datasets:
            continue
        for record in compare(entry):
            append_jsonl(args.output, {**record, "machine": info})
            m = record["metric"]
            f, r = record["folds"][m], record["refit"][m]
            better = "folds" if (f > r if m == "roc_auc" else f < r) else "refit"
            rows.append(
                f"| {record['dataset']} | {record['candidate']} | {m} | {f:.4f} | {r:.4f} | {better} |"
            )
            print(rows[-1], flush=True)
    args.markdown.write_text(
        f"Measured {info['date']}, commit {info['commit']}.\n\n" + "\n".join(rows) + "\n"
    )
    print(json.dumps({"written": str(args.markdown)}))


if __name__ == "__main__":
    main()
