"""MLflow "models from code" entry: the file MLflow copies into a registered model and runs
at load time to get the python model (instead of unpickling one)."""

from mlflow.models import set_model

from refsam.tracking.pyfunc import RefSAMPythonModel

set_model(RefSAMPythonModel())
