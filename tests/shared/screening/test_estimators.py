"""Transferability estimators: hand-derived values, the papers' properties, determinism, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from shared.evaluation.metrics import DegenerateDataError
from shared.screening.estimators import (
    h_score,
    knn_accuracy,
    leep,
    logme,
    logme_evidence,
    nce,
    score_all,
    shrinkage_h_score,
)

LABELS_0011 = np.array([0, 0, 1, 1])


def clusters(n: int = 240, d: int = 16, classes: int = 3, shift: float = 3.0, seed: int = 0):
    """Gaussian noise features; class k shifted by ``shift`` along axis k (separable for a large shift)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, d)) + shift * np.eye(classes, d)[labels]
    return features, labels, rng.permutation(labels)


# ---------------------------------------------------------------- LogME


def test_logme_hand_case_one_feature() -> None:
    # F = (1, 1, -1, -1)^T, y_0 = (1, 1, 0, 0), y_1 = (0, 0, 1, 1). The evidence is the Gaussian
    # log N(y; 0, C) with C = I/beta + F F^T/alpha. C has eigenvalue v1 = 1/beta + 4/alpha along
    # F/|F| and v2 = 1/beta on the 3-dim complement. For y_0: projection p = F.y/|F| = 1, so p^2 = 1;
    # the rest has |y|^2 - p^2 = 1 spread over 3 dims. Maximising -1/2 [log 2pi v1 + p^2/v1
    # + 3 log 2pi v2 + 1/v2] gives v1 = 1, v2 = 1/3, i.e. beta = 3, alpha = 6 (y_1 is the mirror image).
    # Check against Algorithm 1's updates at (6, 3): s^2 = 4, z = 1, d = 6 + 12 = 18, gamma = 12/18 = 2/3,
    # m = beta s z / d = 1/3, alpha = gamma/m^2 = 6; ||F m - y||^2 = 4/9+4/9+1/9+1/9 = 10/9,
    # beta = (4 - 2/3)/(10/9) = 3. Eq. 2: 2 log 3 + 1/2 log 6 - 2 log 2pi - 5/3 - 1/3 - 1/2 log 18
    # = 3/2 log 3 - 2 log 2pi - 2, per sample (/4): -1/2 log 2pi + 3/8 log 3 - 1/2.
    features = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    expected = -0.5 * math.log(2 * math.pi) + 3 / 8 * math.log(3) - 0.5
    evidence = logme_evidence(features, np.eye(2)[LABELS_0011], tol=1e-12, max_iter=1000)
    np.testing.assert_allclose(evidence.alpha, [6.0, 6.0], rtol=1e-8)
    np.testing.assert_allclose(evidence.beta, [3.0, 3.0], rtol=1e-8)
    np.testing.assert_allclose(evidence.log_evidence, [expected, expected], rtol=1e-10)
    assert logme(features, LABELS_0011) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("n", "d", "rank"), [(30, 5, 5), (12, 40, 3)], ids=["N>D", "N<D-low-rank"])
def test_logme_is_the_maximised_gaussian_marginal_likelihood(n: int, d: int, rank: int) -> None:
    # Independent of the SVD algebra: y ~ N(0, I/beta + F F^T/alpha) is the model's marginal; at the
    # returned (alpha, beta) the evidence must equal scipy's log-density, and moving either lowers it.
    # (the target drives one latent factor, so the maximum is inside, not at alpha = infinity)
    rng = np.random.default_rng(1)
    target = rng.integers(0, 2, n).astype(float)
    latent = rng.normal(size=(n, rank)) + 2.0 * target[:, None] * np.eye(1, rank)
    features = latent @ rng.normal(size=(rank, d))
    evidence = logme_evidence(features, target, tol=1e-12, max_iter=10_000)
    alpha, beta = float(evidence.alpha[0]), float(evidence.beta[0])

    def log_marginal(a: float, b: float) -> float:
        return float(multivariate_normal(np.zeros(n), np.eye(n) / b + features @ features.T / a).logpdf(target))

    assert evidence.log_evidence[0] * n == pytest.approx(log_marginal(alpha, beta), rel=1e-9)
    for da, db in [(1.2, 1.0), (0.8, 1.0), (1.0, 1.2), (1.0, 0.8)]:
        assert log_marginal(alpha * da, beta * db) < log_marginal(alpha, beta)


def test_logme_prefers_separable_labels_and_is_deterministic() -> None:
    features, labels, shuffled = clusters()
    score = logme(features, labels)
    assert score > logme(features, shuffled) + 0.1
    assert logme(features, labels) == score  # bit-identical on a second call


def test_logme_is_invariant_to_rotating_the_features() -> None:
    # The evidence depends on F only through F F^T (the prior on w is isotropic), so F -> F Q with Q
    # orthogonal leaves it unchanged.
    features, labels, _ = clusters(n=120, d=8)
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(8, 8)))
    assert logme(features @ rotation, labels) == pytest.approx(logme(features, labels), rel=1e-9)


def test_logme_survives_a_target_orthogonal_to_every_feature() -> None:
    # F.y = 0 sends alpha to infinity (the evidence prefers w = 0): the score stays finite and equals the
    # pure-noise evidence, -1/2 (log 2pi v + 1) per sample with v = |y|^2 / N = 1/2.
    features = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    evidence = logme_evidence(features, np.array([1.0, 1.0, 0.0, 0.0]))
    assert evidence.log_evidence[0] == pytest.approx(-0.5 * (math.log(2 * math.pi * 0.5) + 1), rel=1e-9)


# ---------------------------------------------------------------- H-scores


def test_h_score_hand_case_is_the_correlation_ratio_in_one_dimension() -> None:
    # D = 1: H = var(E[f|y]) / var(f). f = (0, 2, 4, 6), classes {0, 2} and {4, 6}: means 1 and 5
    # around 3, var(E[f|y]) = 4; var(f) = (9 + 1 + 1 + 9)/4 = 5; H = 4/5.
    features = np.array([[0.0], [2.0], [4.0], [6.0]])
    assert h_score(features, LABELS_0011) == pytest.approx(0.8, rel=1e-12)
    # Ledoit-Wolf shrinks nothing with one feature (the target tr(S)/D I is S itself; sklearn's a = 0)
    assert shrinkage_h_score(features, LABELS_0011) == pytest.approx(0.8, rel=1e-12)


def test_h_score_is_invariant_to_invertible_linear_maps() -> None:
    # tr((A^T S A)^-1 A^T S_g A) = tr(S^-1 S_g): a second feature, then an invertible mix of the two.
    features = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, -1.0], [6.0, 1.0]])
    mix = np.array([[2.0, 1.0], [-1.0, 3.0]])
    assert h_score(features, LABELS_0011) == pytest.approx(0.8, rel=1e-12)  # feature 2 is uncorrelated, class-free
    assert h_score(features @ mix, LABELS_0011) == pytest.approx(0.8, rel=1e-10)


def test_shrinkage_h_score_hand_case() -> None:
    # f = (2,0), (-2,0), (0,1), (0,-1), labels 0,1,0,1: S = diag(2, 1/2), mu = tr(S)/2 = 5/4; class means
    # +-(1, 1/2), S_g = [[1, 1/2], [1/2, 1/4]]. Plain H = 1/2 + (1/4)/(1/2) = 1 (= K - 1). With the
    # Ledoit-Wolf intensity a (sklearn gives 17/18 here), S_a = diag(2 - 3a/4, 1/2 + 3a/4) and
    # H_a = (1 - a) (1/(2 - 3a/4) + (1/4)/(1/2 + 3a/4)).
    features = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labels = np.array([0, 1, 0, 1])
    a = 17 / 18
    assert h_score(features, labels) == pytest.approx(1.0, rel=1e-12)
    expected = (1 - a) * (1 / (2 - 0.75 * a) + 0.25 / (0.5 + 0.75 * a))
    assert shrinkage_h_score(features, labels) == pytest.approx(expected, rel=1e-9)


def test_h_scores_prefer_separable_labels_and_stay_within_k_minus_one() -> None:
    features, labels, shuffled = clusters()
    for score in (h_score, shrinkage_h_score):
        separable, random = score(features, labels), score(features, shuffled)
        assert 0.0 <= random < separable <= 2.0 + 1e-9
        assert score(features, labels) == separable


def test_plain_h_score_saturates_when_d_exceeds_n_and_shrinkage_does_not() -> None:
    # With D >= N - 1 the whitened class means span K - 1 directions whatever the labels: plain H = K - 1
    # for shuffled labels too. The shrinkage form (the point of Ibrahim et al.) still ranks them.
    features, labels, shuffled = clusters(n=40, d=100)
    assert h_score(features, shuffled) == pytest.approx(2.0, rel=1e-8)
    assert h_score(features, labels) == pytest.approx(2.0, rel=1e-8)
    assert shrinkage_h_score(features, labels) > shrinkage_h_score(features, shuffled)


# ---------------------------------------------------------------- NCE and LEEP


def test_nce_hand_case() -> None:
    # y = (0, 0, 1, 1), source argmax z = (0, 0, 0, 1): P(z=0) = 3/4 with P(y|z=0) = (2/3, 1/3); z = 1 is
    # pure. H(Y|Z) = 3/4 (2/3 log 3/2 + 1/3 log 3) = 3/4 log 3 - 1/2 log 2.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    assert nce(probs, LABELS_0011) == pytest.approx(-(0.75 * math.log(3) - 0.5 * math.log(2)), rel=1e-12)


def test_leep_hand_case() -> None:
    # theta(x_1) = (1/2, 1/2) with y = 0, theta(x_2) = (0, 1) with y = 1. Joint (1/N = 1/2):
    # P(0,0) = 1/4, P(0,1) = 1/4, P(1,0) = 0, P(1,1) = 1/2; P(z) = (1/4, 3/4);
    # P(y=0|z) = (1, 1/3), P(y=1|z) = (0, 2/3). Sample 1: 1 * 1/2 + 1/3 * 1/2 = 2/3; sample 2:
    # 0 * 0 + 2/3 * 1 = 2/3. LEEP = log 2/3.
    probs = np.array([[0.5, 0.5], [0.0, 1.0]])
    assert leep(probs, np.array([0, 1])) == pytest.approx(math.log(2 / 3), rel=1e-12)


def test_leep_reaches_zero_with_a_perfect_source_target_correspondence() -> None:
    # Source classes {0, 1} belong to target 0 and {2, 3} to target 1; the model spreads its mass
    # within the right group. Then P(y|z) = 1 on the group and the expected prediction is 1: LEEP = 0.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 50)
    within = rng.dirichlet([1.0, 1.0], 50)
    probs = np.zeros((50, 4))
    probs[np.arange(50), 2 * labels] = within[:, 0]
    probs[np.arange(50), 2 * labels + 1] = within[:, 1]
    assert leep(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert nce(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_leep_equals_nce_for_one_hot_source_predictions() -> None:
    # theta one-hot: sum_z P(y_i|z) theta_z = P(y_i|z_i), and the mean over samples of log P(y_i|z_i)
    # is sum_{y,z} P(y,z) log P(y|z) = NCE.
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 80)
    source = np.where(rng.random(80) < 0.7, labels, rng.integers(0, 5, 80))
    probs = np.eye(5)[source]
    assert leep(probs, labels) == pytest.approx(nce(probs, labels), rel=1e-12)


def test_leep_and_nce_bounds_invariances_and_ranking() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 6)) + 3.0 * np.eye(3, 6)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    shuffled = rng.permutation(labels)
    for score in (leep, nce):
        value = score(probs, labels)
        assert -math.log(3) - 1e-12 <= score(probs, shuffled) < value <= 0.0
        # renaming source classes or target classes changes nothing
        assert score(probs[:, ::-1], labels) == pytest.approx(value, rel=1e-12)
        assert score(probs, (labels + 1) % 3 * 10) == pytest.approx(value, rel=1e-12)
        assert score(probs, labels) == value


# ---------------------------------------------------------------- kNN accuracy


def test_knn_accuracy_uses_cosine_distance_on_validation() -> None:
    # k = 1. Val (2, 2) is Euclidean-closest to (1, 0) (class 0, distance 2.2 vs 11.3) but at angle 0
    # from (10, 10) (class 1): cosine says 1, correct. Val (5, 0.1) is at angle ~1 degree from (1, 0):
    # class 0, wrong. Accuracy 1/2 (Euclidean would give 0).
    train = np.array([[1.0, 0.0], [10.0, 10.0]])
    val = np.array([[2.0, 2.0], [5.0, 0.1]])
    assert knn_accuracy(train, np.array([0, 1]), val, np.array([1, 1]), k=1) == 0.5


def test_knn_accuracy_leave_one_out_without_validation() -> None:
    # Unit vectors at 0, 10 and 50 degrees (class 0) and 80, 90 degrees (class 1), k = 1, each point
    # classified by its nearest *other* point: 0 <-> 10 and 80 <-> 90 are right; 50 is 30 degrees from
    # 80 but 40 from 10, so it gets class 1. Accuracy 4/5.
    angles = np.radians([0.0, 10.0, 50.0, 80.0, 90.0])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert knn_accuracy(train, np.array([0, 0, 0, 1, 1]), k=1) == pytest.approx(0.8)


def test_knn_accuracy_prefers_separable_labels() -> None:
    features, labels, shuffled = clusters()
    assert knn_accuracy(features, labels) > knn_accuracy(features, shuffled) + 0.3


# ---------------------------------------------------------------- score_all and bad input


def test_score_all_gives_every_applicable_score_with_its_time() -> None:
    features, labels, _ = clusters(n=120, d=8)
    base = score_all(features[:80], labels[:80], features[80:], labels[80:])
    assert set(base) == {"logme", "h_score", "shrinkage_h_score", "knn_accuracy"}
    assert base["logme"]["score"] == logme(features[:80], labels[:80])
    assert base["knn_accuracy"]["score"] == knn_accuracy(features[:80], labels[:80], features[80:], labels[80:])
    probs = np.full((80, 4), 0.25)
    full = score_all(features[:80], labels[:80], source_probs=probs, k=3)
    assert set(full) == set(base) | {"leep", "nce"}
    assert full["knn_accuracy"]["score"] == knn_accuracy(features[:80], labels[:80], k=3)
    assert all(result["seconds"] >= 0.0 and math.isfinite(result["score"]) for result in full.values())


@pytest.mark.parametrize("estimator", [logme, h_score, shrinkage_h_score, knn_accuracy])
def test_feature_estimators_reject_degenerate_and_malformed_input(estimator) -> None:
    features = np.random.default_rng(6).normal(size=(10, 3))
    with pytest.raises(DegenerateDataError, match="single class"):
        estimator(features, np.zeros(10, dtype=int))
    with pytest.raises(TypeError, match="integers"):
        estimator(features, np.array([0.0, 1.0] * 5))
    with pytest.raises(ValueError, match="shape"):
        estimator(features, np.array([0, 1] * 4))
    with pytest.raises(ValueError, match="NaN"):
        estimator(np.full((10, 3), np.nan), np.array([0, 1] * 5))


def test_source_probability_estimators_reject_logits() -> None:
    for estimator in (leep, nce):
        with pytest.raises(ValueError, match="sum to 1"):
            estimator(np.array([[2.0, -1.0], [0.5, 0.3]]), np.array([0, 1]))


def test_knn_accuracy_needs_enough_points_and_both_validation_arrays() -> None:
    features, labels, _ = clusters(n=6, d=2, classes=2)
    with pytest.raises(DegenerateDataError, match="neighbours"):
        knn_accuracy(features, labels, k=6)  # leave-one-out leaves 5 voters
    with pytest.raises(ValueError, match="both"):
        knn_accuracy(features, labels, features, None)


def test_logme_rejects_all_zero_features() -> None:
    with pytest.raises(DegenerateDataError, match="all zero"):
        logme(np.zeros((6, 3)), np.array([0, 1] * 3))
