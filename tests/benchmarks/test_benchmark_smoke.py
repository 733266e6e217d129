"""Smoke runs of the benchmarks: tiny sizes, results written to tmp_path, no timing assertions.

Speed is measured by running the benchmarks themselves (python -m benchmarks.efficiency, ...),
never by unit tests; these only check that each benchmark runs end to end and writes records
with the expected keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT.parent / "shared" / "datasets" / "manifest.json"


def run_benchmark(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{module} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_efficiency_smoke(tmp_path):
    """The CV-cost part (towers, single fit, naive loop) and `autodl --help` start-up."""
    output, markdown = tmp_path / "efficiency.jsonl", tmp_path / "efficiency.md"
    run_benchmark(
        "benchmarks.efficiency",
        *("--rows", "300", "--epochs", "2", "--repeats", "1", "--folds", "2", "--skip", "search"),
        *("--output", str(output), "--markdown", str(markdown)),
    )
    records = {r["part"]: r for r in read_records(output)}
    assert set(records) == {"startup", "cv_cost"}
    cost = records["cv_cost"]
    assert cost["rows"] == 300 and cost["epochs"] == 2 and cost["folds"] == 2
    for key in (
        "towers_s",
        "single_s",
        "naive_s",
        "towers_over_single",
        "naive_over_single",
        "single_epoch_s",
        "single_step_ms",
        "towers_train_s",
        "towers_outside_fit_share",
    ):
        assert cost[key] > 0, key
    assert cost["epochs_trained"]["single"] == 2 and cost["epochs_trained"]["naive"] == [2] * 2
    startup = records["startup"]
    assert {"help_s", "help_s_samples", "heavy_modules_loaded", "imports_tensorflow"} <= set(startup)
    assert len(startup["help_s_samples"]) == 3
    assert all("machine" in r and "peak_rss_mb" in r for r in records.values())
    text = markdown.read_text()
    assert "towers / single" in text and "autodl --help" in text


@pytest.mark.slow
def test_efficiency_search_smoke(tmp_path):
    """The whole-search part: a tracked search on a tiny table, its time outside training."""
    output, markdown = tmp_path / "efficiency.jsonl", tmp_path / "efficiency.md"
    run_benchmark(
        "benchmarks.efficiency",
        *("--skip", "cv", "startup", "--repeats", "1"),
        *("--search-rows", "300", "--search-trials", "1", "--search-baselines", "dummy", "linear"),
        *("--output", str(output), "--markdown", str(markdown)),
    )
    (search,) = read_records(output)
    assert search["part"] == "search" and search["trials_complete"] == 1
    for key in ("wall_s", "trials_train_s", "trials_fit_s", "baselines_fit_s", "outside_training_share"):
        assert key in search, key
    assert search["trials_train_s"] > 0
    assert {"tracker_init_s", "prepare_s", "baselines_s", "keras_s", "finalize_s"} <= set(search["stages_s"])
    assert "outside training" in markdown.read_text()


def test_scale_smoke(tmp_path):
    output, markdown = tmp_path / "scale.jsonl", tmp_path / "scale.md"
    run_benchmark(
        "benchmarks.scale",
        *("--rows", "1000", "--trials", "1", "--time-limit", "300"),
        *("--baselines", "dummy", "linear", "--max-epochs", "2"),
        *("--output", str(output), "--markdown", str(markdown)),
    )
    (record,) = read_records(output)
    assert "error" not in record, record.get("stderr_tail")
    assert record["rows"] == 1000 and record["columns"] == 50
    for key in (
        "load_profile_s",
        "baselines_wall_s",
        "baselines_fit_s",
        "keras_wall_s",
        "keras_fit_s",
        "keras_epoch_s",
        "wall_s",
        "peak_rss_mb",
        "csv_mb",
    ):
        assert record[key] > 0, key
    assert record["trials_run"] == 1 and set(record["baselines"]) == {"dummy", "linear"}
    assert "| 1000 |" in markdown.read_text()


def test_scale_growth_exponent(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.scale import growth

    records = [
        {
            "rows": n,
            "wall_s": 2 * n,
            "load_profile_s": 0.001 * n,
            "baselines_fit_s": n,
            "keras_epoch_s": n**0.5,
        }
        for n in (1000, 10000, 100000)
    ]
    result = growth([*records, {"rows": 5000, "error": "killed"}])
    assert result["slopes"]["wall_s"] == pytest.approx(1.0)
    assert result["slopes"]["keras_epoch_s"] == pytest.approx(0.5)
    assert [(p["from_rows"], p["to_rows"]) for p in result["pairs"]] == [(1000, 10000), (10000, 100000)]


@pytest.mark.skipif(not MANIFEST.exists(), reason=f"no shared datasets manifest at {MANIFEST}")
def test_quality_smoke(tmp_path):
    output, markdown = tmp_path / "quality.jsonl", tmp_path / "quality.md"
    run_benchmark(
        "benchmarks.quality",
        *("--datasets", "iris", "--budget", "10", "--manifest", str(MANIFEST)),
        *("--output", str(output), "--markdown", str(markdown)),
    )
    (record,) = read_records(output)
    assert record["dataset"] == "iris" and record["metric"] == "log_loss"
    assert {"autodl", "hgb_reference", "wall_s", "peak_rss_mb", "machine"} <= set(record)
    assert "log_loss" in record["autodl"] and "log_loss" in record["hgb_reference"]
    assert "iris" in markdown.read_text()
