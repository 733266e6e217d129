"""Serving: the final model as an MLflow pyfunc, and loading a model from a folder or an MLflow URI.

MLflow is imported only where it is used (~1.3 s): `autodl predict` on a model folder needs none
of it. The pyfunc class lives in `autodl/mlflow_model.py`, the file MLflow runs to rebuild it.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from autodl.errors import DataError
from autodl.model import MANIFEST, TabularModel

MLFLOW_URI_SCHEMES = (
    "runs:/",
    "models:/",
    "mlflow-artifacts:/",
    "file:",
    "s3:/",
    "gs:/",
    "wasbs:",
    "hdfs:",
    "dbfs:",
)
PINNED = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "scikit-learn",
    "pandas",
    "numpy",
    "skops",
    "pyarrow",
)
# The model being logged, by its manifest's text: MLflow's log-time check of the input example
# loads the logged copy back in this process, and reading every fold's files again (seconds for
# forests) would only repeat what the model in memory is (see AutodlPyfunc.load_context).
being_logged: dict[str, TabularModel] = {}


def coerce_columns(frame: pd.DataFrame, column_types: dict[str, str]) -> pd.DataFrame:
    """Each column as the kind it had in training: numbers as floats, text as objects."""
    out = frame.copy()
    for column, kind in column_types.items():
        if column not in out.columns:
            continue
        values = out[column]
        if kind in ("double", "float", "long", "integer"):
            if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                try:
                    values = pd.to_numeric(values.where(values.notna(), None), errors="raise")
                except (TypeError, ValueError) as error:
                    raise DataError(
                        f"column {column!r} holds values that are not numbers ({error})",
                        f"give {column!r} numbers (or empty cells), as in training",
                    ) from None
            out[column] = values.astype("float64")
        elif kind == "string":
            text = [v if isinstance(v, str) or pd.isna(v) else _text(v) for v in values.astype(object)]
            out[column] = pd.Series(text, index=values.index, dtype=object)
    return out


def _text(value) -> str:
    """A number read from a text column: 3.0 back to '3', as the training text had it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def pinned_requirements() -> list[str]:
    """Exact versions of the packages the model needs at prediction time."""
    pins = []
    for name in PINNED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    pins.append(f"mlflow=={metadata.version('mlflow')}")
    return pins


def log_pyfunc_model(
    model_dir: Path,
    input_example: pd.DataFrame,
    model: TabularModel | None = None,
    output_scores: np.ndarray | None = None,
):
    """Log the saved model folder as an MLflow pyfunc in the active run; returns the ModelInfo.

    `model`, the same model already in memory, saves loading the folder again, for the signature
    and for MLflow's check that the logged model serves the input example. `output_scores`, the
    model's scores on any rows (a search's out-of-fold blend), give the output signature without
    predicting the example twice: MLflow's check predicts it once, through every fold model.
    """
    import mlflow.pyfunc
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    if model is None:
        model = TabularModel.load(model_dir)
    example = _signature_frame(input_example.head(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's integer-column hint; handled above
        output = (
            model.predict_frame(example)
            if output_scores is None
            else model.frame_from_scores(np.asarray(output_scores)[: len(example)])
        )
        signature = infer_signature(example, output)
    column_types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
    # Any column may be missing in a row at prediction time, as it may be in training, and is
    # declared of any type: predict() coerces it (see AutodlPyfunc).
    signature.inputs = Schema([ColSpec(AnyType(), c.name, required=False) for c in signature.inputs.inputs])
    package_dir = Path(__file__).resolve().parent
    manifest = (Path(model_dir) / MANIFEST).read_text()
    being_logged[manifest] = model
    try:
        with _pins_checked_without_module_map():
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(package_dir / "mlflow_model.py"),
                artifacts={"model": str(model_dir)},
                model_config={"column_types": column_types, "set_aside": [model.target, *model.set_aside]},
                signature=signature,
                input_example=example,
                pip_requirements=pinned_requirements(),
                code_paths=[str(package_dir)],
            )
    finally:
        del being_logged[manifest]


@contextmanager
def _pins_checked_without_module_map() -> Iterator[None]:
    """MLflow checks a model's pinned requirements against the installed packages (when it logs
    the model and when it loads it), and first maps every installed module to its distribution:
    a scan of each distribution's file list (~1.4 s on TensorFlow's environment, most of
    log_model's own time). The map only serves a package whose version the installed metadata
    cannot give, and the map is built from that same metadata, so it cannot tell more: for this
    call MLflow gets an empty map, and the check itself still runs. MLflow's own lazily built
    map is left as it was found, for any later model in the process."""
    from mlflow.utils import requirements_utils

    names = ("_MODULES_TO_PACKAGES", "_PACKAGES_TO_MODULES")
    if any(not hasattr(requirements_utils, name) for name in names) or (
        requirements_utils._MODULES_TO_PACKAGES is not None  # built already: nothing to save
    ):
        yield
        return
    requirements_utils._MODULES_TO_PACKAGES = {}
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


def _predict_pyfunc(pyfunc, frame: pd.DataFrame) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    names = [spec.name for spec in pyfunc.metadata.get_input_schema().inputs]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(
            f"the input lacks {len(missing)} column(s) the model was trained on: {', '.join(map(repr, missing[:5]))}",
            "add those columns (empty cells are allowed) to the file",
        )
    set_aside = set((pyfunc.model_config or {}).get("set_aside", ()))  # the target, --drop, --group-column
    extra = [c for c in frame.columns if c not in names and c not in set_aside]
    if extra:
        warnings.warn(
            f"ignoring {len(extra)} column(s) unknown to the model: {', '.join(map(str, extra[:5]))}",
            stacklevel=2,
        )
    try:
        return pd.DataFrame(pyfunc.predict(_signature_frame(frame[names])))
    except MlflowException as error:
        raise DataError(
            f"the input does not fit the model's schema ({str(error).splitlines()[-1][:200]})",
            "give each column the kind of values it had in training",
        ) from error


def _signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Floats for integer columns and objects for text, so rows with missing values fit the schema."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_integer_dtype(values):
            out[column] = values.astype("float64")
        elif not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[column] = values.astype(object)
    return out


def load_predictor(reference: str):
    """A callable frame -> prediction frame from a model folder or an MLflow model URI."""
    if reference.startswith(MLFLOW_URI_SCHEMES) and not Path(reference).exists():
        import mlflow.pyfunc

        # MLflow downloads the model into a new temporary folder that it never removes (a copy
        # of every fold model per call); the loaded model holds everything it needs in memory.
        try:
            with (
                tempfile.TemporaryDirectory(prefix="autodl-model-") as folder,
                _pins_checked_without_module_map(),
            ):
                pyfunc = mlflow.pyfunc.load_model(reference, dst_path=folder)
        except Exception as error:
            raise DataError(
                f"cannot load the MLflow model {reference!r} ({str(error).splitlines()[0][:200]})",
                "check the URI and that MLFLOW_TRACKING_URI (or --tracking-uri) points at the store that holds it",
            ) from error
        return lambda frame: _predict_pyfunc(pyfunc, frame)
    path = Path(reference)
    if not path.exists():
        raise DataError(
            f"model not found: {reference}",
            "pass the model folder printed by autodl search, or a runs:/ or models:/ URI",
        )
    if (path / "model" / "autodl-model.json").is_file():
        path = path / "model"
    model = TabularModel.load(path)
    return model.predict_frame
