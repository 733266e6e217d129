"""MLflow "models from code" entry point: MLflow runs this file to rebuild the pyfunc.

Logging the model this way stores no pickled Python object in the MLflow model.
"""

import mlflow

from autodl.serve import AutodlPyfunc

mlflow.models.set_model(AutodlPyfunc())
