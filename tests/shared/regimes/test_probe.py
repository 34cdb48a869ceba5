"""The linear probe: C chosen on validation by the domain's primary metric; weights folded into a head."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from shared.evaluation.metrics import selection_score
from shared.regimes.probe import fit_probe


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
    probe = fit_probe(train, val, grid, metric="auroc", max_iter=1000, seed=0)
    scaler = StandardScaler().fit(train[0])
    scores = {}
    for C in grid:
        clf = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(scaler.transform(train[0]), train[1])
        scores[C] = selection_score("auroc", val[1], clf.predict_proba(scaler.transform(val[0])))
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
    assert fit_probe(train, val, [worst], metric="auroc", max_iter=1000, seed=0).C == worst


def test_fit_probe_multiclass_scores_accuracy() -> None:
    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 4)) + 3 * np.eye(3, 4)[y]
    probe = fit_probe((x[:60], y[:60]), (x[60:], y[60:]), [0.1, 1.0], metric="accuracy", max_iter=500,
                      seed=0)
    assert probe.val_score == pytest.approx(float((probe.predict_proba(x[60:]).argmax(1) == y[60:]).mean()))


def test_probe_weights_stay_finite_with_a_near_constant_feature() -> None:
    """A feature that barely varies (std 1e-7 here; 3e-9 in one of MiniLM's mean-pooled features have) must not give the
    lp_ft head weights of ~1e9 (inf in float32); the folded weights still reproduce the probe."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x[:, 3] = 0.5 + rng.normal(scale=1e-7, size=200)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    probe = fit_probe((x[:150], y[:150]), (x[150:], y[150:]), [1.0], metric="auroc", max_iter=500, seed=0)
    coef, intercept = probe.raw_weights()
    assert np.isfinite(coef.astype(np.float32)).all() and np.abs(coef).max() < 1e4
    logits = x.astype(np.float64) @ coef.T + intercept
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), probe.predict_proba(x)[:, 1], atol=1e-6)


@pytest.mark.parametrize("metric", ["auroc", "accuracy"])
def test_fit_probe_selects_c_by_the_given_metric(metric: str) -> None:
    """The probe's C follows the domain's primary metric: here AUROC and accuracy disagree."""
    train, val = _noisy_problem(2)
    grid = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 100.0]
    scaler = StandardScaler().fit(train[0])
    scores = {C: selection_score(metric, val[1], LogisticRegression(C=C, max_iter=1000, random_state=0)
                                 .fit(scaler.transform(train[0]), train[1])
                                 .predict_proba(scaler.transform(val[0]))) for C in grid}
    chosen = {m: fit_probe(train, val, grid, metric=m, max_iter=1000, seed=0).C for m in ("auroc", "accuracy")}
    assert chosen["auroc"] != chosen["accuracy"], "the two metrics must disagree for this test to mean much"
    assert chosen[metric] == max(grid, key=lambda c: scores[c])


def test_a_class_absent_from_train_gets_a_column_and_a_head_row() -> None:
    """A subsample of a many-class set can miss a rare class: probabilities still have one column per class
    of the label map (column = label id, the absent class at 0), and the head weights one row each."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 3], 30)  # class 2 of 4 never appears in train
    x = rng.normal(size=(90, 5)) + y[:, None]
    val_y = np.array([0, 1, 2, 3] * 5)
    val_x = rng.normal(size=(20, 5)) + val_y[:, None]
    probe = fit_probe((x, y), (val_x, val_y), [1.0], metric="accuracy", max_iter=500, seed=0, num_classes=4)
    probs = probe.predict_proba(val_x)
    assert probs.shape == (20, 4) and np.allclose(probs[:, 2], 0) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1)[val_y == 3] == 3).mean() > 0.5  # column 3 is label 3, not the 3rd fitted class
    coef, intercept = probe.raw_weights()
    assert coef.shape == (4, 5) and intercept[2] < -20 and not coef[2].any()
