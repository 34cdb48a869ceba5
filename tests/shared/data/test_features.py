"""The feature cache never reuses features of other model settings; extraction is deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from shared.config import ModelParams
from shared.data.features import FeatureCache, extract_features
from shared.data.loaders import make_dataset, make_loader
from shared.models import build_model, load_tokenizer


def test_feature_cache_round_trip(tmp_path: Path, tiny_image_params: ModelParams) -> None:
    cache = FeatureCache(tmp_path, tiny_image_params)
    rng = np.random.default_rng(0)
    written = {}
    for split in ("train", "validation", "test"):
        written[split] = (rng.normal(size=(7, 5)).astype(np.float32), rng.integers(0, 3, 7).astype(np.int64))
        cache.write(split, *written[split])
    again = FeatureCache(tmp_path, tiny_image_params.model_copy())
    for split, (features, labels) in written.items():
        got_features, got_labels = again.read(split)
        assert got_features.dtype == np.float32 and got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_features, features)
        np.testing.assert_array_equal(got_labels, labels)


CHANGES = [{"image_size": 64}, {"pretrained": True}, {"weights_file": "w.safetensors"}, {"max_length": 16}]


@pytest.mark.parametrize("change", CHANGES)
def test_feature_cache_refuses_features_of_other_model_settings(
        tmp_path: Path, tiny_image_params: ModelParams, change: dict) -> None:
    cache = FeatureCache(tmp_path, tiny_image_params)
    cache.write("train", np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    other = FeatureCache(tmp_path, tiny_image_params.model_copy(update=change))
    assert other.dir == cache.dir  # same backbone, same folder
    with pytest.raises(FileNotFoundError, match="run the extract stage"):
        other.read("train")


def test_feature_cache_without_features_raises(tmp_path: Path, tiny_image_params: ModelParams) -> None:
    with pytest.raises(FileNotFoundError):
        FeatureCache(tmp_path, tiny_image_params).read("train")


def test_extract_features_is_deterministic_image(image_dd: DatasetDict,
                                                 tiny_image_params: ModelParams) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_image_params, "image", 2, pretrained=True)
    model.train()  # extract_features must switch to eval mode (BatchNorm running stats, dropout)
    loader = make_loader(make_dataset(image_dd["train"], model), batch_size=8)
    first = extract_features(model, loader, torch.device("cpu"))
    second = extract_features(model, make_loader(make_dataset(image_dd["train"], model), batch_size=5),
                              torch.device("cpu"))
    assert first[0].shape == (len(image_dd["train"]), model.model.num_features)
    assert first[0].dtype == np.float32
    np.testing.assert_array_equal(first[1], np.asarray(image_dd["train"]["label"]))
    np.testing.assert_allclose(first[0], second[0], rtol=1e-5, atol=1e-6)  # other batch boundaries
    third = extract_features(model, loader, torch.device("cpu"))
    np.testing.assert_array_equal(first[0], third[0])  # same batches: bit-identical


def test_extract_features_is_deterministic_text(text_dd: DatasetDict, tiny_bert_params: ModelParams) -> None:
    model = build_model(tiny_bert_params, "text", 2, pretrained=True)
    model.train()  # dropout would make features random if extract_features left train mode on
    tokenizer = load_tokenizer(tiny_bert_params)
    dataset = make_dataset(text_dd["train"], model, tokenizer=tokenizer, max_length=32)
    loader = make_loader(dataset, batch_size=8, tokenizer=tokenizer)
    first = extract_features(model, loader, torch.device("cpu"))
    second = extract_features(model, loader, torch.device("cpu"))
    assert first[0].shape == (len(text_dd["train"]), 32)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
