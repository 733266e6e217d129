"""MLflow "models from code" entry point: MLflow runs this file to rebuild the pyfunc.

Logging the model this way stores no pickled Python object in the MLflow model.
"""

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from autodl.model import MANIFEST, TabularModel
from autodl.serve import being_logged, coerce_columns


class AutodlPyfunc(mlflow.pyfunc.PythonModel):
    """Takes raw dataframe rows; returns `prediction` (and `proba_<class>` for classification).

    The signature declares every column (optional, of any type) so that MLflow's schema
    enforcement never refuses raw rows: pandas reads a whole-number column of a CSV as int64, an
    all-empty column as float64, and either may hold a training column of the other kind. The
    column kinds seen in training travel in the model config (`column_types`), and predict()
    coerces each column to its kind, naming the column when a value does not fit.
    """

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["model"])
        manifest = folder / MANIFEST
        in_memory = being_logged.get(manifest.read_text()) if manifest.is_file() else None
        self.model = in_memory if in_memory is not None else TabularModel.load(folder)
        self.column_types = dict((getattr(context, "model_config", None) or {}).get("column_types", {}))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = coerce_columns(pd.DataFrame(model_input), getattr(self, "column_types", {}))
        return self.model.predict_frame(frame)


mlflow.models.set_model(AutodlPyfunc())
