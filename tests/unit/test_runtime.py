"""Process-level helpers the search relies on between trials."""

import gc
import subprocess
import sys
import weakref

from autodl.runtime import long_lived_objects_frozen


class _Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_block_still_collects_what_dies_inside_it_and_unfreezes():
    before = _Node()
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
        inside = _Node()
        died_inside = weakref.ref(inside)
        del inside
        gc.collect()
        assert died_inside() is None
        held_since_before = weakref.ref(before)
        del before
        gc.collect()
        assert held_since_before() is not None  # frozen: skipped by the collector
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert held_since_before() is None  # handed back on the way out, and freed


def test_keras_imported_in_the_background_is_whole_when_asked_for_and_prints_nothing():
    """A search imports Keras beside its last baseline; import_keras() must wait for that import
    (a half-imported module sits in sys.modules meanwhile), and TensorFlow must stay quiet on the
    terminal without the fd-2 silencing the foreground import uses."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, threading, time\n"
        "from autodl import runtime\n"
        "runtime.start_keras_import()\n"
        "assert 'autodl-import-keras' in [t.name for t in threading.enumerate()]\n"
        "while 'keras' not in sys.modules:\n"  # the import has begun, and is far from done
        "    time.sleep(0.001)\n"
        "keras = runtime.import_keras()\n"
        "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        "print(model.count_params())\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "8"
    assert done.stderr == ""


def test_native_notices_below_the_log_level_are_dropped_and_other_stderr_is_passed_on():
    """TensorFlow logs some notices before TF_CPP_MIN_LOG_LEVEL applies; while it loads, stderr
    is held and filtered, and what other threads write meanwhile must still reach the terminal."""
    import os
    import subprocess
    import sys

    script = (
        "import os, sys, threading\n"
        "from autodl.runtime import native_notices_filtered\n"
        "with native_notices_filtered():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "    os.write(2, b'I0000 00:00:1796248379.291810    4850 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "    os.write(2, b'W1127 10:02:03.000001    4850 loader.cc:9] a warning\\n')\n"
        "    os.write(2, b'E0000 00:00:1796248379.291810    4850 loader.cc:12] an error\\n')\n"
        "    thread = threading.Thread(target=lambda: print('from another thread', file=sys.stderr))\n"
        "    thread.start(); thread.join()\n"
        "print('done', file=sys.stderr)\n"
    )

    def stderr_with_level(level: str) -> str:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert stderr_with_level("2").splitlines() == [
        "E0000 00:00:1796248379.291810    4850 loader.cc:12] an error",
        "from another thread",
        "done",
    ]
    assert len(stderr_with_level("0").splitlines()) == 6  # the user asked for everything


def test_exit_without_teardown_keeps_the_exit_code_and_finishes_what_a_normal_exit_would(tmp_path):
    """Pending executor work, atexit handlers and buffered output all complete before the
    process ends; only the interpreter's teardown is skipped."""
    script = f"""
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from autodl.runtime import exit_without_teardown

folder = Path({str(tmp_path)!r})
pool = ThreadPoolExecutor(1)
pool.submit(lambda: (time.sleep(0.3), (folder / "written_by_worker").write_text("done")))
atexit.register(lambda: (folder / "written_at_exit").write_text("done"))
sys.stdout.write("last words without a newline")
exit_without_teardown(3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "last words without a newline"
    assert (tmp_path / "written_by_worker").read_text() == "done"
    assert (tmp_path / "written_at_exit").read_text() == "done"


def test_an_interrupt_inside_a_safe_points_block_waits_for_a_check_or_the_blocks_end():
    """Ctrl-C or SIGTERM during a Keras trial is raised where TensorFlow is between steps (a
    callback's check), never amid its own code; outside such a block it is raised at once."""
    script = """
import os, signal
from autodl import runtime

runtime.install_interrupt_handlers()
steps = []
try:
    with runtime.interrupts_at_safe_points():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("went on")
        runtime.check_interrupt()
        steps.append("not raised at the check")
except KeyboardInterrupt:
    steps.append("raised at the check")
runtime.interrupt_handled()
try:
    with runtime.interrupts_at_safe_points():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("went on")
except KeyboardInterrupt:
    steps.append("raised on leaving")
runtime.interrupt_handled()
try:
    os.kill(os.getpid(), signal.SIGINT)
    steps.append("not raised outside")
except KeyboardInterrupt:
    steps.append("raised at once outside")
print(",".join(steps))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(",") == [
        "went on",
        "raised at the check",
        "went on",
        "raised on leaving",
        "raised at once outside",
    ]


def test_the_console_script_passes_on_the_commands_exit_code(monkeypatch):
    from autodl import cli, runtime

    ended = []
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    monkeypatch.setattr(runtime, "exit_without_teardown", ended.append)
    for raised, code in ((SystemExit(130), 130), (SystemExit(None), 0), (None, 0)):

        def command(raised=raised):
            if raised is not None:
                raise raised

        monkeypatch.setattr(cli, "main", command)
        cli.run()
        assert ended.pop() == code
