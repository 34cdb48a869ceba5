"""Transferability estimators: score a frozen backbone on a target task without training a head.

Inputs are a backbone's frozen features ``(N, D)`` (any float dtype; computed in float64), integer labels
``(N,)`` (any integer values; they are re-coded to ``0..K-1``) and, for LEEP and NCE, the source model's
class probabilities ``(N, K_source)`` on the same samples. Every score is higher-is-better.

Where each one comes from:

* LogME, H-score, shrinkage H-score, LEEP and NCE are written here from their papers (equations in each
  docstring). PyPI has no maintained package for them: ``logme`` there is a logging library, and
  ``transferability-metric`` (one 0.1 release, 2023) installs a top-level package named ``tool``.
* The shrinkage H-score takes its shrinkage intensity from scikit-learn's ``ledoit_wolf_shrinkage`` (the
  intensity ``LedoitWolf`` uses).
* kNN accuracy is scikit-learn's ``KNeighborsClassifier`` (cosine metric, brute force).

Degenerate inputs (one class, too few samples, all-zero features) raise
:class:`~shared.evaluation.metrics.DegenerateDataError`; nothing returns NaN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.neighbors import KNeighborsClassifier

from shared.evaluation.metrics import DegenerateDataError

KNN_NEIGHBOURS = 5
LOGME_MAX_ITER = 100
LOGME_TOL = 1e-6
PROBS_ATOL = 1e-3  # rows of source probabilities must sum to 1 within this (catches logits passed by mistake)
EPS = float(np.finfo(np.float64).eps)
# Keeps alpha and beta finite when the evidence is maximised at a boundary (a target orthogonal to every
# feature sends alpha to infinity; targets the features interpolate send beta there); the evidence
# converges as they grow, so clipping changes it by rounding only.
HYPER_MIN = 1e-150
HYPER_MAX = 1e150


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one Bayesian linear model per target column (LogME's inner problem).

    Attributes:
        alpha: ``(T,)`` prior precision of the weights at the maximum.
        beta: ``(T,)`` noise precision at the maximum.
        log_evidence: ``(T,)`` maximum log evidence divided by ``N`` (LogME per target).
        iterations: fixed-point iterations run (the slowest target's).
    """

    alpha: np.ndarray
    beta: np.ndarray
    log_evidence: np.ndarray
    iterations: int


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = LOGME_MAX_ITER, tol: float = LOGME_TOL) -> float:
    """LogME (You et al., ICML 2021): the maximum log evidence per sample, averaged over classes.

    Each class ``k`` is a one-vs-rest regression target ``y_k = 1[label == k]`` (the paper's treatment of
    classification); :func:`logme_evidence` maximises the evidence of ``y_k`` under a Bayesian linear
    model on the features and this returns ``(1/K) sum_k L_k(alpha_k*, beta_k*) / N``. Features are used
    as given (no centring, no bias column), as in the paper.

    Args:
        features: ``(N, D)`` frozen features.
        labels: ``(N,)`` integer labels, at least two classes.
        max_iter: cap on the alpha/beta fixed-point iterations.
        tol: stop once alpha and beta of every class change by less than this, relatively.

    Returns:
        The LogME score (a log density per sample; higher is better).
    """
    x = _features(features)
    codes, num_classes = _codes(labels, len(x))
    targets = np.eye(num_classes)[codes]
    return float(logme_evidence(x, targets, max_iter=max_iter, tol=tol).log_evidence.mean())


def logme_evidence(
    features: np.ndarray, targets: np.ndarray, *, max_iter: int = LOGME_MAX_ITER, tol: float = LOGME_TOL
) -> Evidence:
    """Maximise the evidence of real targets under a Bayesian linear model (LogME, Algorithm 1).

    The model is ``w ~ N(0, alpha^-1 I_D)``, ``y | F, w ~ N(F w, beta^-1 I_N)``; its log evidence (the
    paper's Eq. 2) is::

        L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2pi
                         - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|,
        A = alpha I + beta F^T F,   m = beta A^-1 F^T y.

    With the SVD ``F = U diag(s) V^T`` (rank r; the ``D - r`` zero singular values give ``log alpha``
    each), ``z = U^T y`` and ``d_i = alpha + beta s_i^2``, this is computed as the identical::

        L = N/2 log beta - N/2 log 2pi - beta/2 ||F m - y||^2 - alpha/2 m^T m
            - 1/2 sum_i log(1 + beta s_i^2 / alpha),
        m^T m = sum_i beta^2 s_i^2 z_i^2 / d_i^2,
        ||F m - y||^2 = sum_i alpha^2 z_i^2 / d_i^2 + (||y||^2 - ||z||^2),

    so the cost per iteration is O(r) and does not depend on N or D. Algorithm 1's fixed point (MacKay's
    updates), from ``alpha = beta = 1``::

        gamma = sum_i beta s_i^2 / d_i,   alpha <- gamma / m^T m,   beta <- (N - gamma) / ||F m - y||^2.

    The authors' reference code caps the iteration at 11 steps; this one iterates to ``tol`` (at most
    ``max_iter`` steps, reported in :attr:`Evidence.iterations`) and evaluates L at the final alpha, beta.

    Args:
        features: ``(N, D)`` features.
        targets: ``(N,)`` or ``(N, T)`` real targets; each column is maximised on its own.
        max_iter: cap on the fixed-point iterations.
        tol: relative change of alpha and beta (every column) below which the iteration stops.

    Returns:
        The :class:`Evidence` at the maximum, one entry per target column.
    """
    x = _features(features)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) != len(x) or not np.isfinite(y).all():
        raise ValueError(f"targets of shape {y.shape}: expected finite (N,) or (N, T) with N = {len(x)}")
    n = len(x)
    s2, z = _spectrum(x, y)
    z2 = z**2
    outside = np.maximum((y**2).sum(axis=0) - z2.sum(axis=0), 0.0)  # the part of y no feature spans
    alpha = np.ones(y.shape[1])
    beta = np.ones(y.shape[1])
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        gamma, m_sq, residual = _posterior(s2, z2, outside, alpha, beta)
        new_alpha = _ratio(gamma, m_sq)
        new_beta = _ratio(n - gamma, residual)
        change = max(np.max(np.abs(new_alpha - alpha) / alpha), np.max(np.abs(new_beta - beta) / beta))
        alpha, beta = new_alpha, new_beta
        if change < tol:
            break
    _, m_sq, residual = _posterior(s2, z2, outside, alpha, beta)
    log_det = np.log1p(beta * s2[:, None] / alpha).sum(axis=0)
    evidence = n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi) - beta / 2 * residual - alpha / 2 * m_sq - log_det / 2
    return Evidence(alpha=alpha, beta=beta, log_evidence=evidence / n, iterations=iterations)


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al., ICIP 2019, "An information-theoretic approach to transferability ...").

    ``H(f) = tr(cov(f)^-1 cov(E[f | y]))``: the class-conditional means' share of the feature
    covariance, summed over whitened directions; it lies in ``[0, K - 1]``. Both covariances use the
    ``1/N`` normalisation (the ratio does not depend on it) and ``cov(E[f | y]) = sum_k p_k mu_k mu_k^T``
    with ``mu_k`` the centred class means. ``cov(f)^-1`` is the pseudo-inverse, dropping eigenvalues below
    ``max(N, D) * eps * lambda_max`` (numpy's ``matrix_rank`` tolerance). With ``D >= N - 1`` it saturates
    at ``K - 1`` whatever the labels; :func:`shrinkage_h_score` is the remedy.

    Args:
        features: ``(N, D)`` frozen features.
        labels: ``(N,)`` integer labels, at least two classes.

    Returns:
        The H-score.
    """
    x = _features(features)
    codes, num_classes = _codes(labels, len(x))
    centred = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(x))
    return _between_class_trace(eigenvalues, eigenvectors, centred, codes, num_classes)


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """The regularised H-score (Ibrahim, Ponomareva & Mazumder, 2022, "Newer is not always better ...").

    ``H_a(f) = tr(cov_a(f)^-1 (1 - a) cov(E[f | y]))`` with the Ledoit-Wolf estimate
    ``cov_a(f) = (1 - a) S + a (tr(S) / D) I`` and ``a`` its shrinkage intensity (scikit-learn's
    ``LedoitWolf`` on the centred features, ``1/N`` normalisation, as :func:`h_score`). Shrinking the
    between-class covariance by the same ``1 - a`` keeps the score in ``[0, K - 1]``; unlike the plain
    H-score it stays informative when ``D`` is comparable to or larger than ``N``.

    Args:
        features: ``(N, D)`` frozen features.
        labels: ``(N,)`` integer labels, at least two classes.

    Returns:
        The shrinkage H-score.
    """
    x = _features(features)
    codes, num_classes = _codes(labels, len(x))
    centred = x - x.mean(axis=0)
    shrinkage = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    # cov_a has the eigenvectors of S and eigenvalues (1 - a) lambda + a tr(S) / D: one eigh of S serves both
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(x))
    shrunk = (1.0 - shrinkage) * eigenvalues + shrinkage * eigenvalues.sum() / len(eigenvalues)
    return (1.0 - shrinkage) * _between_class_trace(shrunk, eigenvectors, centred, codes, num_classes)


def nce(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """Negative conditional entropy (Tran, Nguyen & Hassner, ICCV 2019): ``NCE = -H(Y | Z)``.

    ``Z`` is the source model's predicted class (argmax of ``source_probs``) and, with the empirical joint
    ``P(y, z) = #{i: y_i = y, z_i = z} / N``::

        NCE = sum_{y, z} P(y, z) log P(y | z),   P(y | z) = P(y, z) / P(z).

    It lies in ``[-log K, 0]``; 0 when every source class maps to a single target class.

    Args:
        source_probs: ``(N, K_source)`` source-class probabilities.
        labels: ``(N,)`` integer target labels, at least two classes.

    Returns:
        The NCE score.
    """
    probs = _probs(source_probs)
    codes, num_classes = _codes(labels, len(probs))
    joint = np.zeros((num_classes, probs.shape[1]))
    np.add.at(joint, (codes, probs.argmax(axis=1)), 1.0 / len(probs))
    conditional = _conditional(joint)
    seen = joint > 0
    return float((joint[seen] * np.log(conditional[seen])).sum())


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen, Hassner, Seeger & Archambeau, ICML 2020), the log expected empirical prediction.

    With ``theta(x)_z`` the source model's probability of source class ``z``, the soft empirical joint and
    conditional of target label ``y`` and source label ``z`` are::

        P(y, z) = (1/N) sum_{i: y_i = y} theta(x_i)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),

    and LEEP is the mean log-likelihood of the expected empirical predictor::

        LEEP = (1/N) sum_i log( sum_z P(y_i | z) theta(x_i)_z ).

    LEEP <= 0, with 0 reached when each source class the model puts mass on belongs to one target class
    only; for one-hot ``theta`` LEEP equals :func:`nce`.

    Args:
        source_probs: ``(N, K_source)`` source-class probabilities.
        labels: ``(N,)`` integer target labels, at least two classes.

    Returns:
        The LEEP score.
    """
    probs = _probs(source_probs)
    codes, num_classes = _codes(labels, len(probs))
    joint = np.eye(num_classes)[codes].T @ probs / len(probs)
    expected = probs @ _conditional(joint).T  # (N, K): the empirical predictor's P(y | x_i)
    # each term is >= theta(x_i)_z^2 / N for some z, hence positive
    return float(np.log(expected[np.arange(len(probs)), codes]).mean())


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    *,
    k: int = KNN_NEIGHBOURS,
) -> float:
    """Accuracy of a k-nearest-neighbour classifier (cosine distance, majority vote) on the features.

    Fitted on the training features; scored on the validation features when they are given, otherwise
    leave-one-out on the training set (each point is classified by its ``k`` nearest *other* points,
    scikit-learn's ``predict(None)``). Ties in the vote go to the smallest label (scikit-learn's rule).

    Args:
        train_x: ``(N, D)`` training features.
        train_y: ``(N,)`` integer training labels, at least two classes.
        val_x: ``(M, D)`` validation features, or ``None`` for leave-one-out.
        val_y: ``(M,)`` integer validation labels; given exactly when ``val_x`` is.
        k: number of neighbours.

    Returns:
        The fraction of correctly classified validation (or training) points.
    """
    x = _features(train_x)
    _codes(train_y, len(x))
    y = np.asarray(train_y)
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither (leave-one-out on the training set)")
    neighbours_available = len(x) - (1 if val_x is None else 0)
    if not 1 <= k <= neighbours_available:
        raise DegenerateDataError(f"k = {k} neighbours, but only {neighbours_available} training points to vote")
    model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
    if val_x is None or val_y is None:
        return float(np.mean(model.predict(None) == y))
    vx = _features(val_x)
    vy = np.asarray(val_y)
    if vx.shape[1] != x.shape[1] or vy.shape != (len(vx),) or not np.issubdtype(vy.dtype, np.integer):
        raise ValueError(f"validation features {vx.shape} / labels {vy.shape} do not match D = {x.shape[1]}")
    return float(np.mean(model.predict(vx) == vy))


def score_all(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    source_probs: np.ndarray | None = None,
    *,
    k: int = KNN_NEIGHBOURS,
) -> dict[str, dict[str, float]]:
    """Every applicable score of one backbone, with the seconds each took.

    LogME, the H-scores, LEEP and NCE are computed on the training split; kNN accuracy is fitted there and
    scored on validation when given (leave-one-out otherwise). LEEP and NCE need ``source_probs``, the
    source model's class probabilities on the *training* samples, and are left out without them.

    Args:
        train_x: ``(N, D)`` training features.
        train_y: ``(N,)`` integer training labels.
        val_x: ``(M, D)`` validation features, optional.
        val_y: ``(M,)`` validation labels, given with ``val_x``.
        source_probs: ``(N, K_source)`` source-class probabilities of the training samples, optional.
        k: neighbours for kNN accuracy.

    Returns:
        ``{name: {"score": value, "seconds": wall time}}`` for ``logme``, ``h_score``,
        ``shrinkage_h_score``, ``knn_accuracy`` and, given ``source_probs``, ``leep`` and ``nce``.
    """
    jobs: dict[str, Callable[[], float]] = {
        "logme": lambda: logme(train_x, train_y),
        "h_score": lambda: h_score(train_x, train_y),
        "shrinkage_h_score": lambda: shrinkage_h_score(train_x, train_y),
        "knn_accuracy": lambda: knn_accuracy(train_x, train_y, val_x, val_y, k=k),
    }
    if source_probs is not None:
        jobs["leep"] = lambda: leep(source_probs, train_y)
        jobs["nce"] = lambda: nce(source_probs, train_y)
    results: dict[str, dict[str, float]] = {}
    for name, job in jobs.items():
        start = time.perf_counter()
        score = job()
        results[name] = {"score": score, "seconds": time.perf_counter() - start}
    return results


def _features(features: np.ndarray) -> np.ndarray:
    """``features`` as finite float64 ``(N, D)``, N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"features of shape {x.shape}: expected (N, D)")
    if len(x) < 2:
        raise DegenerateDataError(f"{len(x)} sample(s): every estimator needs at least two")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinity")
    return x


def _codes(labels: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Integer ``labels`` re-coded to ``0..K-1`` and ``K``; at least two classes."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels of shape {y.shape}: expected ({n},) to match the other input")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DegenerateDataError(f"a single class ({classes.tolist()}): transferability is undefined")
    return codes, len(classes)


def _probs(source_probs: np.ndarray) -> np.ndarray:
    """``source_probs`` as float64 ``(N, K_source)`` rows of probabilities."""
    p = np.asarray(source_probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < 2:
        raise ValueError(f"source probabilities of shape {p.shape}: expected (N, K_source), N >= 2")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=PROBS_ATOL):
        raise ValueError("source probabilities must be finite, non-negative and sum to 1 per row (not logits)")
    return p


def _conditional(joint: np.ndarray) -> np.ndarray:
    """``P(y | z)`` from a ``(K, K_source)`` joint; columns of source classes never seen stay 0."""
    marginal = joint.sum(axis=0, keepdims=True)
    return np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)


def _spectrum(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero squared singular values ``s^2`` (r,) of ``x`` and ``z = U^T y`` (r, T).

    The smaller of the two Gram matrices is factorised: ``x^T x = V diag(s^2) V^T`` when ``N >= D`` (then
    ``U^T y = diag(1/s) V^T x^T y``), the thin SVD of ``x`` otherwise.
    """
    n, d = x.shape
    tolerance = max(n, d) * EPS
    if n >= d:
        s2, v = np.linalg.eigh(x.T @ x)
        keep = s2 > s2.max() * tolerance
        s2, v = s2[keep], v[:, keep]
        z = (v.T @ (x.T @ y)) / np.sqrt(s2)[:, None]
    else:
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        keep = s > s.max() * tolerance
        s2, z = s[keep] ** 2, u[:, keep].T @ y
    if len(s2) == 0:
        raise DegenerateDataError("the features are all zero: LogME is undefined")
    return s2, z


def _posterior(
    s2: np.ndarray, z2: np.ndarray, outside: np.ndarray, alpha: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gamma``, ``m^T m`` and ``||F m - y||^2`` per target at (alpha, beta); see :func:`logme_evidence`."""
    denominator = alpha + beta * s2[:, None]  # (r, T)
    gamma = (beta * s2[:, None] / denominator).sum(axis=0)
    # ratios <= 1 first, so that huge alpha or beta cannot overflow a square
    m_sq = (s2[:, None] * z2 * (beta / denominator) ** 2).sum(axis=0)
    residual = (z2 * (alpha / denominator) ** 2).sum(axis=0) + outside
    return gamma, m_sq, residual


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` clipped to [HYPER_MIN, HYPER_MAX]; a zero denominator gives HYPER_MAX."""
    out = np.full_like(numerator, HYPER_MAX)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return np.clip(out, HYPER_MIN, HYPER_MAX)


def _between_class_trace(eigenvalues: np.ndarray, eigenvectors: np.ndarray, centred: np.ndarray, codes: np.ndarray,
                         num_classes: int) -> float:
    """``tr(C^+ sum_k p_k mu_k mu_k^T)`` = ``sum_k p_k mu_k^T C^+ mu_k`` for ``C = V diag(eigenvalues) V^T``
    and ``mu_k`` the class means of ``centred``; ``C^+`` is the pseudo-inverse that drops eigenvalues below
    ``max(N, D) * eps * lambda_max`` (numpy's ``matrix_rank`` tolerance)."""
    keep = eigenvalues > max(centred.shape) * EPS * eigenvalues.max()
    counts = np.bincount(codes, minlength=num_classes).astype(np.float64)
    means = np.eye(num_classes)[codes].T @ centred / counts[:, None]
    projected = means @ eigenvectors[:, keep]  # (K, r): the means in the eigenbasis
    weights = counts / counts.sum()
    return float(weights @ (projected**2 / eigenvalues[keep]).sum(axis=1))
