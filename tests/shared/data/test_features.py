"""The feature cache never reuses features of other model settings; the probe picks C on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from shared.config import ModelParams
from shared.data.features import FeatureCache, extract_features, fit_probe, probe_score
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


def _noisy_problem(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two informative features among many noisy ones: the best C is neither extreme."""
    rng = np.random.default_rng(seed)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 30))
        x[:, :2] += 0.8 * (2 * y[:, None] - 1)
        return x, y

    return sample(60), sample(200)


def test_fit_probe_keeps_the_best_c_on_validation() -> None:
    train, val = _noisy_problem(0)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    probe = fit_probe(train, val, grid, max_iter=1000, seed=0)
    scaler = StandardScaler().fit(train[0])
    scores = {}
    for C in grid:
        clf = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(scaler.transform(train[0]), train[1])
        scores[C] = probe_score(val[1], clf.predict_proba(scaler.transform(val[0])))
    best = max(grid, key=lambda c: scores[c])  # the first of equal scores, as fit_probe keeps it
    assert best not in (grid[0], grid[-1]), "the best C must lie inside the grid for this test to mean much"
    assert probe.C == best
    assert probe.val_score == pytest.approx(scores[best])
    np.testing.assert_allclose(probe.predict_proba(val[0])[:, 1],
                               LogisticRegression(C=best, max_iter=1000, random_state=0)
                               .fit(scaler.transform(train[0]), train[1])
                               .predict_proba(scaler.transform(val[0]))[:, 1])
    # a grid holding only the worst C keeps it, so the choice above really came from the scores
    worst = min(grid, key=lambda c: scores[c])
    assert fit_probe(train, val, [worst], max_iter=1000, seed=0).C == worst


def test_fit_probe_multiclass_scores_accuracy() -> None:
    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 4)) + 3 * np.eye(3, 4)[y]
    probe = fit_probe((x[:60], y[:60]), (x[60:], y[60:]), [0.1, 1.0], max_iter=500, seed=0)
    assert probe.val_score == pytest.approx(float((probe.predict_proba(x[60:]).argmax(1) == y[60:]).mean()))


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


def test_probe_weights_stay_finite_with_a_near_constant_feature() -> None:
    """A feature that barely varies (std 1e-7 here; 3e-9 in one of MiniLM's mean-pooled features have) must not give the
    lp_ft head weights of ~1e9 (inf in float32); the folded weights still reproduce the probe."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x[:, 3] = 0.5 + rng.normal(scale=1e-7, size=200)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    probe = fit_probe((x[:150], y[:150]), (x[150:], y[150:]), [1.0], max_iter=500, seed=0)
    coef, intercept = probe.raw_weights()
    assert np.isfinite(coef.astype(np.float32)).all() and np.abs(coef).max() < 1e4
    logits = x.astype(np.float64) @ coef.T + intercept
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), probe.predict_proba(x)[:, 1], atol=1e-6)
