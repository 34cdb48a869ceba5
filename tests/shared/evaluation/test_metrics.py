"""Clinical metrics: CIs, thresholds, calibration, degenerate splits, paired bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.config import EvaluateParams
from shared.evaluation.metrics import (
    DegenerateDataError,
    auroc,
    bootstrap_ci,
    choose_threshold,
    evaluate_predictions,
    expected_calibration_error,
    operating_point,
    paired_bootstrap,
)


def binary_case(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)
    return labels, np.stack([1 - p1, p1], axis=1)


def test_binary_cis_contain_point_estimates_and_no_nan() -> None:
    labels, probs = binary_case()
    result = evaluate_predictions(labels, probs, labels, probs, task="binary", class_names=["neg", "pos"],
                                  params=EvaluateParams(bootstrap=200), seed=1)
    test = result["test"]
    for name in ("auroc", "auprc"):
        assert test[f"{name}_ci_low"] <= test[name] <= test[f"{name}_ci_high"]
        assert test[f"{name}_ci_high"] - test[f"{name}_ci_low"] > 0.01
    assert "NaN" not in json.dumps(result)
    assert set(test) >= {"threshold", "sensitivity", "specificity", "balanced_accuracy", "ece",
                         "confusion_matrix"}
    assert np.sum(test["confusion_matrix"]) == len(labels)


def test_youden_threshold_on_constructed_case() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # J at 0.7: sens 3/4, spec 4/4 -> 0.75; at 0.4: sens 1, spec 3/4 -> 0.75; first maximum kept
    t = choose_threshold(labels, scores, "youden")
    assert t == pytest.approx(0.7)
    point = operating_point(labels, scores, t)
    assert point["sensitivity"] == 0.75 and point["specificity"] == 1.0
    assert point["confusion_matrix"] == [[4, 0], [1, 3]]
    assert choose_threshold(labels, scores, "target_sensitivity", 0.99) == pytest.approx(0.4)
    assert choose_threshold(labels, scores, "fixed") == 0.5


def test_ece_of_calibrated_predictions_is_near_zero_and_of_overconfident_is_not() -> None:
    rng = np.random.default_rng(0)
    p1 = rng.random(20000)
    labels = (rng.random(20000) < p1).astype(int)
    calibrated = np.stack([1 - p1, p1], axis=1)
    assert expected_calibration_error(labels, calibrated) < 0.02
    sharp = np.stack([1 - (p1 > 0.5), p1 > 0.5], axis=1).astype(float)
    assert expected_calibration_error(labels, sharp) > 0.2


@pytest.mark.parametrize("split", ["validation", "test"])
def test_single_class_split_raises(split: str) -> None:
    labels, probs = binary_case()
    one = np.zeros(10, dtype=int)
    args = (one, probs[:10], labels, probs) if split == "validation" else (labels, probs, one, probs[:10])
    with pytest.raises(DegenerateDataError, match=split):
        evaluate_predictions(*args, task="binary", class_names=["a", "b"])


def test_nan_probabilities_raise() -> None:
    labels, probs = binary_case()
    probs[3, 1] = np.nan
    with pytest.raises(DegenerateDataError, match="NaN"):
        evaluate_predictions(labels, probs, labels, probs, task="binary", class_names=["a", "b"])


def test_multiclass_report_and_vectorised_bootstrap_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 150)
    probs = rng.dirichlet(np.ones(3), 150)
    probs[np.arange(150), labels] += 0.6
    probs /= probs.sum(axis=1, keepdims=True)
    result = evaluate_predictions(labels, probs, labels, probs, task="multiclass",
                                  class_names=["a", "b", "c"], params=EvaluateParams(bootstrap=100))["test"]
    assert set(result["per_class"]) == {"a", "b", "c"}
    assert result["auroc_ci_low"] <= result["auroc"] <= result["auroc_ci_high"]
    assert 0 < result["macro_f1"] <= 1
    low, high = bootstrap_ci(labels, probs, lambda y, p: auroc(y, p), 50, seed=3)  # sklearn path
    fast = bootstrap_ci(labels, probs, "auroc", 50, seed=3)  # rank-sum path, same resamples
    assert fast == pytest.approx((low, high))


def test_paired_bootstrap_detects_a_better_model_and_not_an_identical_one() -> None:
    labels, good = binary_case(300)
    rng = np.random.default_rng(5)
    noise = rng.random(300)
    bad = np.stack([1 - noise, noise], axis=1)
    better = paired_bootstrap(labels, good, bad, "auroc", 300, seed=0)
    assert better["diff"] > 0.2 and better["ci_low"] > 0 and better["p_value"] < 0.01
    same = paired_bootstrap(labels, good, good, "auroc", 100, seed=0)
    assert same["diff"] == 0 and same["p_value"] == 1.0
