"""Packages as MLflow models, logged by ``evaluate@DOMAIN-REGIME`` into the regime's run (``compare``
registers the winners: :mod:`shared.serving.registration`).

A logged model is a pyfunc from code (:mod:`shared.serving.pyfunc`) with the package folder as its
artifact, a signature (input column ``image``: binary, or ``text``: string; outputs ``prob_<class>`` and
``label``) and one test item as its input example. Its code paths hold transferlab's ``shared`` package, so
a registered version keeps loading after the repository's code moves on.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from shared.serving.package import ModelCard, folder_bytes, probability_columns

MODEL_NAME = "model"  # the logged model's name inside its run
REQUIREMENTS = ("torch", "timm", "transformers", "safetensors", "scikit-learn", "skops", "pillow", "pandas",
                "numpy", "pydantic", "mlflow")
SHARED = Path(__file__).resolve().parents[1]


def requirements() -> list[str]:
    """The model's pip requirements: the libraries it runs on, pinned to the versions it was logged with
    (explicit, so MLflow does not load the model in a subprocess to infer them)."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def signature(card: ModelCard) -> Any:
    """Input: the card's column (``image`` binary, ``text`` string); output: probabilities and label."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    kind = "binary" if card.modality == "image" else "string"
    outputs: list[ColSpec | TensorSpec] = [ColSpec("double", c) for c in probability_columns(card.class_names)]
    outputs.append(ColSpec("string", "label"))
    return ModelSignature(inputs=Schema([ColSpec(kind, card.input_column)]), outputs=Schema(outputs))


def log_package(package: Path, example: Any, threshold: float | None) -> Any:
    """Log the package in ``package`` as this run's MLflow model; returns MLflow's ``ModelInfo``.

    ``example``: one raw input (an image's bytes or a text), the model's input example.
    """
    import mlflow
    import pandas as pd

    from shared.serving.pyfunc import MODEL_CODE

    card = ModelCard.read(package)
    config = {} if threshold is None else {"threshold": float(threshold)}
    meta = {"domain": card.domain, "regime": card.regime, "kind": card.kind, "class_names": card.class_names,
            "precision": card.precision, "package_bytes": folder_bytes(package), **config}
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts={"package": str(package)},
        model_config=config or None, signature=signature(card),
        input_example=pd.DataFrame({card.input_column: [example]}), pip_requirements=requirements(),
        code_paths=[str(SHARED)], metadata=meta)
