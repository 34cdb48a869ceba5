"""Screening a domain's candidates: every score on a real feature cache, rankings, finalists, and a
random-feature candidate ranked below a trained one on separable data by every estimator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import ModelParams, ScreenParams, parse_params
from shared.data.features import FeatureCache
from shared.screening.screen import pick_finalists, ranking, score_candidate, steps_per_epoch, summary


def separable(n: int, seed: int, informative: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of 3 classes: shifted along one axis each (a trained backbone), or pure noise (random)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, 12)) + (4.0 * np.eye(3, 12)[labels] if informative else 0.0)
    probs = rng.dirichlet(np.ones(5), n) if not informative else np.eye(5)[labels] * 0.9 + 0.02
    return features.astype(np.float32), labels.astype(np.int64), probs / probs.sum(1, keepdims=True)


def cache_of(folder: Path, informative: bool) -> FeatureCache:
    params = ModelParams(backbone="toy", pretrained=informative)
    cache = FeatureCache(folder, params)
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        x, y, probs = separable(150, seed, informative)
        cache.write(split, x, y, probs if split == "train" else None)
    return cache


@pytest.fixture()
def domain_params():
    raw = {"domains": ["vision"], "regimes": ["frozen"], "candidates": {"vision/toy": "vision"},
           "vision": {"data": {"dataset": "mnist"}, "model": {"backbone": "toy"},
                      "regimes": {"frozen": {"C_grid": [0.1, 1.0]}}}}
    return parse_params(raw).domain("vision")


def test_a_random_feature_candidate_ranks_below_a_trained_one_by_every_estimator(tmp_path: Path, domain_params) -> None:
    scores = {name: score_candidate(cache_of(tmp_path / name, informative), domain_params, metric="accuracy",
                                    num_classes=3, seed=0)
              for name, informative in (("random", False), ("trained", True))}
    assert set(scores["trained"]) == {"logme", "h_score", "shrinkage_h_score", "knn_accuracy", "leep", "nce", "probe"}
    for estimator, result in summary(scores).items():
        assert result["ranking"] == ["trained", "random"], estimator
        assert result["seconds"] >= 0
    assert scores["trained"]["probe"]["score"] > 0.9 > 0.6 > scores["random"]["probe"]["score"]


def test_source_probabilities_are_stored_only_when_given(tmp_path: Path) -> None:
    cache = cache_of(tmp_path, informative=True)
    assert cache.read_source_probs("train") is not None
    assert cache.read_source_probs("validation") is None


def test_finalists_by_the_chosen_estimator() -> None:
    scores = {c: {"logme": {"score": s, "seconds": 0.0}, "probe": {"score": p, "seconds": 0.0}}
              for c, s, p in (("a", 1.0, 0.9), ("b", 3.0, 0.5), ("c", 2.0, 0.7))}
    assert ranking(scores, "logme") == ["b", "c", "a"]
    assert pick_finalists(["a", "b", "c"], scores, ScreenParams(finalists=2)) == ["b", "c"]
    assert pick_finalists(["a", "b", "c"], scores, ScreenParams(finalists=1, select_by="probe")) == ["a"]
    assert pick_finalists(["a", "b", "c"], None, ScreenParams(finalists="all")) == ["a", "b", "c"]
    assert pick_finalists(["a"], None, ScreenParams()) == ["a"]
    with pytest.raises(ValueError, match="no score for"):
        ranking(scores, "leep")


def test_ties_keep_the_candidates_order_and_epochs_count_steps() -> None:
    tied = {c: {"logme": {"score": 1.0, "seconds": 0.0}} for c in ("x", "y")}
    assert ranking(tied, "logme") == ["x", "y"]
    assert steps_per_epoch(100, 32, None) == 4 and steps_per_epoch(100, 32, 2) == 2
