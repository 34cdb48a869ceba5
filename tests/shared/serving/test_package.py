"""The servable package (shared/serving): for a probe, a trained network, a merged adapter and the
scikit-learn baseline, on images and text, the package scores the raw test inputs with the probabilities
the train stage computed; the MLflow pyfunc logged from it loads from the store and says what is wrong
with a bad request; compare's registration is idempotent."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from datasets import DatasetDict

from shared.config import ModelParams
from shared.serving.package import load_package, probability_columns, raw_inputs
from shared.testing.serving import train_tiny_package

REGIMES = ["frozen", "full", "lora", "baseline"]  # a probe, a trained network, a merged adapter, scikit-learn


@pytest.fixture(params=["image", "text"])
def modality(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("regime", REGIMES)
def test_package_scores_raw_inputs_as_the_run_did(tmp_path: Path, modality: str, regime: str,
                                                   tiny_image_params: ModelParams, tiny_bert_params: ModelParams,
                                                   image_dd: DatasetDict, text_dd: DatasetDict) -> None:
    model, dd = (tiny_image_params, image_dd) if modality == "image" else (tiny_bert_params, text_dd)
    package, expected = train_tiny_package(tmp_path, modality, model, dd, regime)
    scorer = load_package(package)
    assert scorer.card.kind == ("baseline" if regime == "baseline" else "network")
    got = scorer.predict_proba(raw_inputs(dd["test"]))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if regime == "lora":  # merged for serving: no PEFT layer is left in the served network
        assert not any("lora_" in name for name in scorer.model.state_dict())  # type: ignore[attr-defined]


def test_pyfunc_from_the_store(tmp_path: Path, mlflow_uri: str, tiny_bert_params: ModelParams,
                               text_dd: DatasetDict) -> None:
    from mlflow.exceptions import MlflowException

    from shared.serving.mlflow_model import log_package

    package, expected = train_tiny_package(tmp_path, "text", tiny_bert_params, text_dd, "full")
    texts = raw_inputs(text_dd["test"])
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run():
        info = log_package(package, texts[0], threshold=0.5)
    model = mlflow.pyfunc.load_model(info.model_uri)
    assert model.metadata.metadata["class_names"] == ["negative", "positive"]
    out = model.predict(pd.DataFrame({"text": texts}))
    columns = probability_columns(["negative", "positive"])
    assert list(out.columns) == [*columns, "label"]
    np.testing.assert_allclose(out[columns].to_numpy(), expected, atol=1e-5)
    assert out["label"].tolist() == ["positive" if p >= 0.5 else "negative" for p in expected[:, 1]]
    with pytest.raises(MlflowException, match="text"):
        model.predict(pd.DataFrame({"sentence": texts}))


def test_bad_image_names_the_item(tmp_path: Path, tiny_image_params: ModelParams, image_dd: DatasetDict) -> None:
    from shared.serving.package import InputError

    package, _ = train_tiny_package(tmp_path, "image", tiny_image_params, image_dd, "full")
    items = raw_inputs(image_dd["test"])[:3]
    items[1] = b"not an image"
    with pytest.raises(InputError, match="item 1"):
        load_package(package).predict_proba(items)
