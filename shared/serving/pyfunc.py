"""The MLflow ``python_function`` model of a transferlab package: a DataFrame with the dataset's own input
column (``image``: encoded bytes or file paths; ``text``: strings) in, one probability column per class
(``prob_<class>``) and the predicted ``label`` out.

Logged as MLflow *models from code* (:data:`MODEL_CODE` is the model's code; nothing is pickled), with the
package folder as the artifact ``package`` and the operating threshold of a binary task (chosen on
validation by ``evaluate``) in the model config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel, PythonModelContext

MODEL_CODE = Path(__file__).with_name("model_code.py")


class TransferlabModel(PythonModel):
    """Scores raw inputs with a package loaded by :func:`shared.serving.package.load_package`."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the package and the operating threshold."""
        from shared.serving.package import load_package

        self.scorer = load_package(Path(context.artifacts["package"]))
        self.threshold = (context.model_config or {}).get("threshold")

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Probabilities and labels, one row per input row; a bad request raises ``MlflowException``
        (``INVALID_PARAMETER_VALUE``: the scoring server answers 400 with the message)."""
        return score_frame(self.scorer, model_input, self.threshold)


def score_frame(scorer: Any, frame: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """``prob_<class>`` columns and ``label`` for the input column of ``scorer``'s card."""
    from shared.serving.package import InputError, labels_at, probability_columns

    card = scorer.card
    column = card.input_column
    if not isinstance(frame, pd.DataFrame) or column not in frame.columns:
        got = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
        kind = "encoded image bytes or file paths" if column == "image" else "strings"
        raise MlflowException(f"expected a column '{column}' ({kind}); got {got}",
                              error_code=INVALID_PARAMETER_VALUE)
    items = frame[column].tolist()
    try:
        probs = scorer.predict_proba(items)
    except InputError as err:
        raise MlflowException(f"column '{column}', {err}", error_code=INVALID_PARAMETER_VALUE) from None
    out = pd.DataFrame(probs, columns=probability_columns(card.class_names), index=frame.index)
    out["label"] = labels_at(probs, card.class_names, threshold)
    return out
