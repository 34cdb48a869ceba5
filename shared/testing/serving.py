"""A servable package trained on tiny data, for the serving tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams, TrainParams
from shared.models import feature_backbone
from shared.regimes.base import PACKAGE
from shared.registry import get_regime
from shared.serving.package import ModelCard
from shared.testing.regimes import tiny_context
from shared.training.run import run_regime


def fresh_store(folder: Path) -> str:
    """A new SQLite MLflow store in ``folder`` (migrated now, with ``folder`` as the working directory, so its
    Default experiment keeps artifacts in ``folder/mlruns``, not in whatever directory the tests run in)."""
    from mlflow import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with contextlib.chdir(folder):
        MlflowClient(uri).search_experiments()
    return uri


def train_tiny_package(folder: Path, modality: Literal["image", "text"], model: ModelParams, dd: DatasetDict,
                       regime: str, store: str | None = None, precision: Literal["auto", "fp32", "bf16"] = "fp32",
                       eval_precision: Literal["auto", "fp32", "bf16"] = "fp32") -> tuple[Path, np.ndarray]:
    """Run ``regime`` on tiny binary data in ``folder`` with a card, in the MLflow store ``store`` (default: a
    new one in ``folder``; the loop logs each epoch); returns the package folder and the run's test
    probabilities. ``precision`` and ``eval_precision`` are ``train.precision`` and ``train.eval_precision``
    (fp32 by default: ``auto`` would depend on the CPU's bf16 units and timing)."""
    dp = DomainParams(data=DataParams(dataset="tiny"), model=model,
                      train=TrainParams(epochs=1, batch_size=8, precision=precision, eval_precision=eval_precision))
    cls = get_regime(regime)
    ctx = tiny_context(dp, modality, dd, folder,
                       model=feature_backbone(model, modality, 2) if cls.needs_features else None)
    ctx.card = ModelCard(domain="tiny", regime=regime, modality=modality, task="binary",
                         class_names=list(dd["train"].features["label"].names), kind="network",
                         model=model.model_dump(mode="json", exclude={"weights_file", "extract_batch_size"}))
    out = folder / "out"
    out.mkdir(parents=True)
    mlflow.set_tracking_uri(store or fresh_store(folder))
    with mlflow.start_run():  # the shared loop logs each epoch
        preds, _ = run_regime(cls.for_domain(dp), ctx, out)
    return out / PACKAGE, preds.test_probs
