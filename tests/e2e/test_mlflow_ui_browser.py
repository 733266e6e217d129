"""End to end in a real browser: headless Chromium drives the MLflow UI that `autodl ui` serves
after a tiny search, the way a reviewer uses it.

It opens the experiment's runs table from the link `autodl ui` prints, expands the search's parent
run to show its nested baseline and trial runs, opens the best run (metrics, tags, its plots) and
the parent run's plots, and checks the plot images really load. Screenshots are saved to
$AUTODL_TEST_ARTIFACTS (default: the test's temporary folder) and their paths printed.

Chromium and chromedriver are the Debian packages `chromium` and `chromium-driver` (.ci/run
installs them); the test installs them itself when it may, and skips only when it cannot.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TITANIC = REPO / "examples" / "data" / "titanic.csv"
BASELINES = ("dummy", "linear", "hist_gradient_boosting")
N_TRIALS = 2
WAIT = 90  # seconds for one page state; generous for a loaded two-core machine
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)


def browser_binaries() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages when missing and possible."""

    def find() -> tuple[str | None, str | None]:
        return (
            shutil.which("chromium") or _existing("/usr/bin/chromium"),
            shutil.which("chromedriver") or _existing("/usr/bin/chromedriver"),
        )

    chromium, driver = find()
    if chromium and driver:
        return chromium, driver
    can_install = shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
    if can_install:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
            env=env,
            capture_output=True,
            timeout=900,
        )
        chromium, driver = find()
    if not (chromium and driver):
        pytest.skip("chromium/chromedriver are absent and cannot be installed here (no root or apt-get)")
    return chromium, driver


def _existing(path: str) -> str | None:
    return path if Path(path).exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AUTODL_TEST_ARTIFACTS") or tmp_path / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_ui(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"autodl ui exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"autodl ui did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """End `autodl ui` and the MLflow server it started (one process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def test_mlflow_ui_shows_the_search_its_trials_and_the_best_run(tmp_path):
    chromium, chromedriver = browser_binaries()
    import mlflow
    from mlflow import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from autodl.api import search

    shots = artifacts_dir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        result = search(
            TITANIC,
            target="Survived",
            trials=N_TRIALS,
            folds=2,
            space="mlp_small",
            max_epochs=2,
            time_limit=600,
            capacity_check=False,  # a check of the space, not of what these tests review
            baselines=BASELINES,
            output_dir=tmp_path / "run",
            tracking_uri=store,
        )
    finally:
        mlflow.set_tracking_uri(None)
    client = MlflowClient(store)
    parent = client.get_run(result.run_id)
    experiment_id = parent.info.experiment_id
    best_id = parent.data.tags["autodl.best_run_id"]
    best_name = client.get_run(best_id).info.run_name
    names = [o.name for o in result.outcomes]
    assert len(names) == len(BASELINES) + N_TRIALS

    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["COLUMNS"] = "250"
    with open(log, "w") as out:
        ui = subprocess.Popen(
            [sys.executable, "-m", "autodl.cli", "ui", "--port", str(port), "--tracking-uri", store],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_ui(base, ui, log)
        printed = log.read_text()
        assert f"at {base}" in printed, printed
        link = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/\S+", printed)
        assert link, printed
        assert f"/#/experiments/{experiment_id}/runs" in link.group(0)

        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        wait = WebDriverWait(driver, WAIT, poll_frequency=0.5)

        def body() -> str:
            return driver.find_element(By.TAG_NAME, "body").text

        def wait_text(*texts: str) -> None:
            try:
                wait.until(lambda d: all(t in body() for t in texts))
            except Exception:
                driver.save_screenshot(str(shots / "failure.png"))
                missing = [t for t in texts if t not in body()]
                pytest.fail(f"not shown: {missing}; page text:\n{body()[:3000]}")

        def close_assistant() -> None:
            for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
                if button.is_displayed():
                    button.click()

        # 1. the experiment's runs table, from the printed link: the parent run, then its trials
        driver.get(link.group(0))
        wait_text(parent.info.run_name)
        close_assistant()
        row = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, f"[role=row][row-id='{parent.info.run_id}']")
        )
        assert not any(name in body() for name in names), "nested runs start folded under the parent"
        row.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        wait_text(*names)
        shown = [
            cell.text.splitlines()[-1]
            for cell in driver.find_elements(By.CSS_SELECTOR, "[role=gridcell][col-id*='Run Name']")
        ]
        assert shown[0] == parent.info.run_name
        assert sorted(shown[1:]) == sorted(names)
        driver.save_screenshot(str(shots / "runs_table.png"))

        # 2. the best run: its metrics, its best tag, its plots
        driver.get(f"{base}/#/experiments/{experiment_id}/runs/{best_id}?workflowType=machine_learning")
        wait_text(best_name, "cv_roc_auc", "cv_roc_auc_std", "fold_roc_auc", "fit_seconds", "autodl.best")
        close_assistant()
        assert parent.info.run_name in body(), "the best run links to its parent run"
        driver.save_screenshot(str(shots / "best_run.png"))
        open_plot(
            driver, wait, wait_text, f"{base}/#/experiments/{experiment_id}/runs/{best_id}", "fold_scores"
        )
        driver.save_screenshot(str(shots / "best_run_plot.png"))

        # 3. the parent run's plots: every one is listed, and the ROC curve renders
        parent_url = f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}"
        open_plot(driver, wait, wait_text, parent_url, "roc_curve")
        plots = [
            "optimization_history",
            "param_importances",
            "learning_curves",
            "confusion_matrix",
            "pr_curve",
        ]
        wait_text(*[f"{name}.png" for name in plots])
        driver.save_screenshot(str(shots / "parent_run_plots.png"))
        print(f"\nscreenshots: {shots}")
    finally:
        if driver is not None:
            driver.quit()
        stop(ui)
    for name in ("runs_table.png", "best_run.png", "best_run_plot.png", "parent_run_plots.png"):
        assert (shots / name).stat().st_size > 10_000, name


def open_plot(driver, wait, wait_text, run_url: str, plot: str) -> None:
    """Open a run's Artifacts tab, unfold plots/, select <plot>.png, and wait until the image loads."""
    from selenium.webdriver.common.by import By

    driver.get("about:blank")  # a fresh page load: a hash-only change can keep the previous run's tree
    driver.get(f"{run_url}/artifacts?workflowType=machine_learning")
    wait_text("plots")
    driver.find_element(By.XPATH, "//*[normalize-space(text())='plots']").click()
    wait_text(f"{plot}.png")
    driver.find_element(By.XPATH, f"//*[normalize-space(text())='{plot}.png']").click()

    wait_text(f"plots/{plot}.png")  # the preview pane's header names the selected file

    def loaded(d):  # the preview is an <img> with a blob: URL of the downloaded PNG
        for image in d.find_elements(By.CSS_SELECTOR, "img[src^='blob:']"):
            if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image):
                return image
        return False

    image = wait.until(loaded)
    assert int(image.get_attribute("naturalWidth")) >= 300, "the plot image is too small to be a real PNG"
