"""Classical baseline: TF-IDF / raw pixels + logistic regression, C chosen on validation."""

from __future__ import annotations

import numpy as np
from datasets import DatasetDict

from shared.data.splits import build_label_map, make_split
from shared.evaluation.metrics import auroc
from shared.regimes.baseline import BaselineParams, fit_baseline, pixel_features


def text_splits() -> DatasetDict:
    labels = build_label_map(["normal", "abnormal"])
    pos = ["right pleural effusion", "left lower lobe consolidation", "cardiomegaly with effusion",
           "large pneumothorax", "patchy opacity consolidation", "enlarged heart effusion"]
    neg = ["lungs are clear", "no acute disease", "heart size normal clear lungs", "no effusion lungs clear",
           "normal chest", "clear lungs no acute disease"]

    def split(k: int) -> object:
        texts = [t + f" note {k}" for t in neg + pos]
        return make_split(texts, [0] * 6 + [1] * 6, labels, modality="text", source=f"s{k}")

    return DatasetDict(train=split(0), validation=split(1), test=split(2))


def image_splits(n: int = 16) -> DatasetDict:
    labels = build_label_map(["dark", "bright"])
    rng = np.random.default_rng(0)

    def split(seed: int) -> object:
        y = [i % 2 for i in range(n)]
        noise = rng.integers(0, 40, (n, 20, 20), dtype=np.uint8)
        images = [np.full((20, 20), 60 + 120 * c, dtype=np.uint8) + noise[i] for i, c in enumerate(y)]
        return make_split(images, y, labels, modality="image", source=f"s{seed}")

    return DatasetDict(train=split(0), validation=split(1), test=split(2))


def test_text_baseline_learns_and_returns_probabilities() -> None:
    dd = text_splits()
    fitted = fit_baseline(dd, "text", BaselineParams(C_grid=[1.0, 10.0], max_features=100), 0, None, "auroc")
    val, test = fitted.val_probs, fitted.test_probs
    assert val.shape == (12, 2) and test.shape == (12, 2)
    np.testing.assert_allclose(test.sum(axis=1), 1.0)
    assert auroc(np.asarray(dd["test"]["label"]), test) > 0.9


def test_image_baseline_grey_detection_and_learning() -> None:
    dd = image_splits()
    x, grey = pixel_features(dd["train"], 8)
    assert grey and x.shape == (16, 64) and 0 <= x.min() and x.max() <= 1
    fitted = fit_baseline(dd, "image", BaselineParams(C_grid=[0.1, 1.0], pixel_size=8), 0, "balanced", "auroc")
    val, test = fitted.val_probs, fitted.test_probs
    assert fitted.settings == {"pixel_size": 8, "grey": True}
    assert auroc(np.asarray(dd["test"]["label"]), test) == 1.0
    assert val.shape == (16, 2)


def test_same_seed_same_probabilities() -> None:
    dd = text_splits()
    params = BaselineParams(C_grid=[1.0], max_features=50)
    a = fit_baseline(dd, "text", params, 0, None, "auroc")
    b = fit_baseline(dd, "text", params, 0, None, "auroc")
    np.testing.assert_array_equal(a.test_probs, b.test_probs)
