"""The code of every logged transferlab MLflow model (MLflow models from code): MLflow runs this file to
get the model object, so loading a model unpickles nothing."""

from mlflow.models import set_model

from shared.serving.pyfunc import TransferlabModel

set_model(TransferlabModel())
