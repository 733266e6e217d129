"""Process settings that must be in place before TensorFlow or OpenMP start."""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


def configure(threads: int = 1) -> None:
    """Quiet TensorFlow logs, pin the Keras backend, and size thread pools to `threads`.

    Values the user set in the environment are kept. OpenMP's wait policy is left alone:
    OMP_WAIT_POLICY=PASSIVE made HistGradientBoosting 10-15x slower (wine_quality_red: 0.7 s ->
    12 s per fit, alone or beside TensorFlow); it only helps when two OpenMP-heavy processes
    share the cores (two searches at once), where users can set it themselves.
    """
    defaults = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def import_keras():
    """Import Keras (TensorFlow backend) with TensorFlow's start-up notices kept off the terminal
    (see `native_notices_filtered`)."""
    wait_for_keras_import()  # a background import leaves a half-made module in sys.modules
    if "keras" in sys.modules:
        return sys.modules["keras"]
    configure()
    with native_notices_filtered():
        import keras
    # Every trial is a new model with its own traced functions, so TensorFlow's "frequent
    # retracing" warning fires during any search while pointing at nothing to fix.
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


# TensorFlow's native log lines: severity letter, date, time (before absl is set up: 00:00:<epoch
# seconds>), thread, file:line]
NATIVE_NOTICE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
NATIVE_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NATIVE_LEVELS = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


@contextmanager
def native_notices_filtered() -> Iterator[None]:
    """Hold file descriptor 2 while TensorFlow loads, then pass on all but its quietened notices.

    TensorFlow 2.21's native code logs some notices before absl's logging is set up, where
    TF_CPP_MIN_LOG_LEVEL does not apply yet: on CPUs where oneDNN is on by default (AVX-512
    VNNI and newer) every import printed "oneDNN custom operations are on" twice, with absl's
    preamble. Lines of a severity below TF_CPP_MIN_LOG_LEVEL (and the preamble) are dropped,
    as TensorFlow would drop them later; everything else written to stderr meanwhile, by any
    thread, is written out when the block ends.
    """
    try:
        quiet_below = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        quiet_below = 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line for line in held.read().splitlines(keepends=True) if not _quietened(line, quiet_below)
            ]
            if kept:
                os.write(2, b"".join(kept))


def _quietened(line: bytes, quiet_below: int) -> bool:
    if quiet_below < 1:
        return False
    if line.rstrip(b"\r\n") == NATIVE_PREAMBLE:
        return True
    notice = NATIVE_NOTICE.match(line)
    return notice is not None and NATIVE_LEVELS[notice.group(1)] < quiet_below


_background_import: threading.Thread | None = None


def start_keras_import() -> None:
    """Import Keras (and TensorFlow, ~7 s on two cores) in a background thread.

    A search starts it beside its last baseline instead of in front of the first Keras work.
    The import holds the GIL for most of its time, so only work that runs without the GIL
    (libsvm, forests' tree building) overlaps it; beside HistGradientBoosting, whose boosting
    loop is Python, both ran one after the other. What other threads write to stderr
    meanwhile is held back until the import ends, not lost (see `native_notices_filtered`).
    A failed import is left for `import_keras` to repeat and raise where it is needed.
    """
    global _background_import
    if "keras" in sys.modules or _background_import is not None:
        return
    configure()

    def load() -> None:
        try:
            with native_notices_filtered():
                import keras  # noqa: F401

            logging.getLogger("tensorflow").setLevel(logging.ERROR)  # as import_keras does
        except Exception:  # import_keras repeats the import, and raises, where Keras is needed
            pass

    _background_import = threading.Thread(target=load, name="autodl-import-keras", daemon=True)
    _background_import.start()


def wait_for_keras_import() -> None:
    """Block until a background import started by `start_keras_import` has ended."""
    if _background_import is not None:
        _background_import.join()


def release_keras_memory() -> None:
    """Free the previous models' graphs before the next model is built.

    `clear_session` alone is not enough on TensorFlow 2.21: every traced `tf.custom_gradient`
    (Keras' training step uses some) stays registered in TensorFlow's global gradient registry
    with a closure that pins its whole FuncGraph, about 4 MiB per fitted model
    (tensorflow/tensorflow#97697; keras-team/tf-keras#898 purges them the same way). Those
    entries are only read while a gradient is being traced, and no model is traced between
    trials, so dropping them is safe.
    """
    keras = import_keras()
    from tensorflow.python.framework import ops  # noqa: TID251 (the leak is in TensorFlow itself)

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if isinstance(registry, dict):
        for name in [name for name in registry if name.startswith("CustomGradient-")]:
            del registry[name]
    keras.backend.clear_session(free_memory=True)  # its garbage collection now frees those graphs
    _return_freed_memory()


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the objects alive now (modules, TensorFlow, the data) out of garbage collection.

    Each trial ends with a full collection to free its models' graphs; with TensorFlow, Keras,
    MLflow and the data loaded, most of that collection (~0.3-0.5 s a trial on a 2-core
    machine) walks the same half-million long-lived objects. `gc.freeze` moves them to a
    generation the collector skips, which brings a trial's collection down to a few
    milliseconds; objects made inside the block are collected as usual. Garbage is collected
    before freezing, so none is held, and `gc.unfreeze` on the way out hands the frozen objects
    back to the collector, so nothing that dies later stays uncollected.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise: ~1.5 MiB per trial of
    fragmentation showed as growth in RSS). A no-op where the C library has no malloc_trim."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return
    if trim is not None:
        trim(0)


_interrupt_requested = False
_previous_unraisablehook = None


def install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, and the request is also remembered.

    Python swallows (and prints) an exception raised inside a weakref callback or `__del__`, which
    is where a signal often lands while garbage collection frees the previous trial's models; the
    remembered request is raised again at the next check (`check_interrupt`), and such swallowed
    interrupts are not printed.
    """
    import signal
    import sys

    signal.signal(signal.SIGINT, _request_interrupt)
    signal.signal(signal.SIGTERM, _request_interrupt)
    if sys.unraisablehook is not _quiet_interrupts:  # installed once, however often called
        global _previous_unraisablehook
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_interrupts


def _quiet_interrupts(unraisable) -> None:
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        _previous_unraisablehook(unraisable)


class _SafePointsDepth(threading.local):
    """How many `interrupts_at_safe_points` blocks are open. Per thread, though only the main
    thread's count matters: signal handlers run there, and the capacity check's thread must not
    hold back the main thread's interrupts."""

    depth = 0


_safe_points_only = _SafePointsDepth()


def _request_interrupt(signum, frame) -> None:
    global _interrupt_requested
    _interrupt_requested = True
    if not _safe_points_only.depth:
        raise KeyboardInterrupt


@contextmanager
def interrupt_handler_installed() -> Iterator[None]:
    """Ctrl-C handled as `install_interrupt_handlers` does, within the block, and the caller's
    own SIGINT handler back afterwards (from the Python API a notebook keeps its kernel's),
    with no request left pending. A no-op outside the main thread, where no signal arrives,
    and where the caller ignores SIGINT (a background job)."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _request_interrupt)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)
        interrupt_handled()


@contextmanager
def interrupts_at_safe_points() -> Iterator[None]:
    """Within this block Ctrl-C and SIGTERM only record the request; it is raised by the next
    `check_interrupt()` (Keras callbacks call it between steps) or on leaving the block.

    TensorFlow's Python code is not safe against an exception at an arbitrary line: raised while
    a function was being traced, it ended in `SystemError: bad argument to internal function`
    (12 of 300 interrupted fits), and once left the thread in graph mode, so that the final
    stage after a Ctrl-C failed ("trying to pass a Tensor to a NumPy call").
    """
    _safe_points_only.depth += 1
    try:
        yield
    finally:
        _safe_points_only.depth -= 1
    check_interrupt()


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if an interrupt was requested and not yet handled."""
    if _interrupt_requested:
        raise KeyboardInterrupt


def interrupt_handled() -> None:
    global _interrupt_requested
    _interrupt_requested = False


def exit_without_teardown(code: int) -> NoReturn:
    """End the process as the interpreter would, less its teardown of loaded native libraries.

    Once TensorFlow is loaded, the interpreter's own exit takes ~1.5-2 s after the last line
    of work (module and C++ object teardown; measured with TensorFlow, MLflow and scikit-learn
    loaded: 2.0 s, 0.1 s this way), time a user waits for nothing. The steps of a normal exit
    that matter still run first: executor threads finish and other threads are joined, then
    the atexit handlers (MLflow's, the tracker's), then the output streams are flushed.
    """
    import atexit

    threading._shutdown()  # what a normal exit does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`autodl ... | head`): nothing to flush to
            pass
    os._exit(code)
