"""Process settings that must be in place before TensorFlow or OpenMP start."""

from __future__ import annotations

import os


def configure(threads: int = 1) -> None:
    """Quiet TensorFlow logs, pin the Keras backend, and size thread pools to `threads`.

    OpenMP's spin-waiting slows scikit-learn badly when another process holds a core, so
    threads wait passively. Values the user set in the environment are kept.
    """
    defaults = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "OMP_WAIT_POLICY": "PASSIVE",
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def import_keras():
    """Import Keras (TensorFlow backend) with the C++ start-up banner kept off the terminal.

    TensorFlow's native libraries print absl/oneDNN notices straight to file descriptor 2 while
    loading, before TF_CPP_MIN_LOG_LEVEL applies; Python errors still surface as exceptions.
    """
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"]
    configure()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return keras
