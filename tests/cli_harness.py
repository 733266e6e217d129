"""Running the `autodl` CLI the way a user does, and checking what they see (bad-input and fault tests).

In-process runs go through the real entry point `autodl.cli.main()` (stdout, stderr and warnings
captured as the terminal would show them) and are bounded by a SIGALRM watchdog, so a hang fails
the test instead of stalling it.
Real processes are used where signals, kills or a fresh interpreter matter.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from autodl import cli

REPO = Path(__file__).resolve().parents[1]
TITANIC = REPO / "examples" / "data" / "titanic.csv"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A search that only fits the linear baseline on 2 folds: a second or two on small data.
QUICK = ["--trials", "0", "--baselines", "linear", "--folds", "2", "--no-tracking", "--time-limit", "30"]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


class Hang(BaseException):
    """Raised by the watchdog; a BaseException so that cli.main() cannot turn it into an exit code."""


def _plain(text: str) -> str:
    return ANSI.sub("", text)


def run_cli(*args: str | Path, timeout: int = 120) -> Outcome:
    """`autodl <args>` through cli.main() in this process; fails with Hang after `timeout` seconds."""
    saved_env = dict(os.environ)
    saved_argv = sys.argv
    saved_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()

    def watchdog(signum, frame):
        raise Hang(f"autodl {' '.join(map(str, args))} still running after {timeout}s")

    previous_alarm = signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(timeout)
    started = time.monotonic()
    sys.argv = ["autodl", *map(str, args)]
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            # What a user's terminal would show: every warning but the deprecations Python hides.
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            try:
                cli.main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            else:
                code = 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)  # `autodl search` turns SIGTERM into Ctrl-C for its process
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, None) for w in caught)
    return Outcome(code, _plain(out.getvalue()), shown + _plain(err.getvalue()), time.monotonic() - started)


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    env.update(extra)
    return env


def start_cli(*args: str | Path, cwd: Path, new_session: bool = False, **env: str) -> subprocess.Popen:
    """`python -m autodl.cli <args>` as a real process (stdout and stderr to files in `cwd`);
    `new_session`: in a process group of its own, as a terminal's foreground job is."""
    return subprocess.Popen(
        [sys.executable, "-m", "autodl.cli", *map(str, args)],
        stdout=(cwd / "stdout.txt").open("w"),
        stderr=(cwd / "stderr.txt").open("w"),
        cwd=cwd,
        env=cli_env(**env),
        start_new_session=new_session,
    )


def run_subprocess(*args: str | Path, cwd: Path, timeout: int = 300, **env: str) -> Outcome:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "autodl.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(**env),
        timeout=timeout,
    )
    return Outcome(done.returncode, _plain(done.stdout), _plain(done.stderr), time.monotonic() - started)


def assert_no_crash(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.text, outcome.text[-3000:]
    assert "internal error" not in outcome.text, outcome.text[-3000:]


def assert_one_line_error(outcome: Outcome, *needles: str, code: int = 2) -> str:
    """Exit 2, exactly one non-empty stderr line with 'Fix:', no traceback; returns the line."""
    assert_no_crash(outcome)
    assert outcome.code == code, (outcome.code, outcome.stdout[-2000:], outcome.stderr)
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    assert line.startswith("error:") and "Fix:" in line, line
    assert line.index("Fix:") > len("error: ") + 5, line  # the problem is named before the fix
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def assert_search_ok(outcome: Outcome, output: Path) -> dict:
    """Exit 0 with a leaderboard and a summary; returns summary.json."""
    assert_no_crash(outcome)
    assert outcome.code == 0, (outcome.code, outcome.stdout[-2000:], outcome.stderr[-2000:])
    assert (output / "leaderboard.csv").is_file()
    assert (output / "model" / "autodl-model.json").is_file()
    return json.loads((output / "summary.json").read_text())


def column_profile(summary: dict, name: str) -> dict:
    found = [c for c in summary["summary"]["columns_profile"] if c["name"] == name]
    assert found, [c["name"] for c in summary["summary"]["columns_profile"]]
    return found[0]
