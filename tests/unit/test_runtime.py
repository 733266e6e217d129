"""Process-level helpers the search relies on between trials."""

import gc
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
