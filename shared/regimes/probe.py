"""The linear probe on frozen features: standardised features + scikit-learn logistic regression, C
chosen on validation by the domain's primary metric; shared by ``frozen`` and ``lp_ft``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, StrictInt
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from shared.config import PosFloat, Strict
from shared.data.features import FeatureCache
from shared.evaluation.metrics import selection_score
from shared.regimes.base import RegimeContext


class ProbeParams(Strict):
    """Logistic regression on cached features, C chosen on validation."""

    C_grid: list[PosFloat] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    max_iter: StrictInt = Field(default=2000, ge=10)


ABSENT_LOGIT = -30.0  # head bias of a class train never showed (raw_weights): probability ~1e-13


def full_probs(clf: LogisticRegression, x: Any, num_classes: int) -> np.ndarray:
    """Probabilities over every class of the label map, column = label id (a class absent from train, which
    scikit-learn leaves out of ``predict_proba``, gets 0)."""
    out = np.zeros((x.shape[0], num_classes))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


@dataclass
class Probe:
    """A fitted probe: scaler + logistic regression, the chosen C, its validation score and the number of
    classes of the label map (train may lack some)."""

    scaler: StandardScaler
    classifier: LogisticRegression
    C: float
    val_score: float
    num_classes: int

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, num_classes)."""
        return full_probs(self.classifier, self.scaler.transform(features), self.num_classes)

    def raw_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients and intercept in the unscaled feature space (for initialising a Linear head): one row
        for a binary probe, else one per class of the label map (a class absent from train: zero weights,
        bias :data:`ABSENT_LOGIT`)."""
        scale, clf = self.scaler.scale_, self.classifier
        coef_fit = clf.coef_ / scale
        intercept_fit = clf.intercept_ - (clf.coef_ * self.scaler.mean_ / scale).sum(1)
        if coef_fit.shape[0] == 1 or len(clf.classes_) == self.num_classes:  # binary: one row (class 1 vs 0)
            return coef_fit, intercept_fit
        coef = np.zeros((self.num_classes, coef_fit.shape[1]))
        intercept = np.full(self.num_classes, ABSENT_LOGIT)
        coef[clf.classes_], intercept[clf.classes_] = coef_fit, intercept_fit
        return coef, intercept


def fit_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], C_grid: list[float],
              *, metric: str, max_iter: int, seed: int, class_weight: str | None = None,
              num_classes: int | None = None) -> Probe:
    """Fit one logistic regression per C on train features (one BLAS thread); keep the best on validation by
    ``metric`` (the domain's primary metric; the first C of equal scores is kept). ``num_classes``: of the
    label map (default: the largest label seen + 1)."""
    if num_classes is None:
        num_classes = int(max(train[1].max(), val[1].max())) + 1
    scaler = StandardScaler().fit(train[0])
    # a (near-)constant feature would get a scale of ~1e-9 and, folded into a Linear head (raw_weights,
    # lp_ft), weights of ~1e9 that turn to inf in float32: floor the scale at 1e-3 of the median scale
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * float(np.median(scaler.scale_)))
    x_train, x_val = scaler.transform(train[0]), scaler.transform(val[0])
    best: Probe | None = None
    for C in C_grid:
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, class_weight=class_weight)
        # L-BFGS's matrix-vector products are too small for a second BLAS thread to pay: on 2 cores one thread
        # fits 3-20x faster (README, "What the screening costs")
        with threadpool_limits(limits=1, user_api="blas"):
            clf.fit(x_train, train[1])
        score = selection_score(metric, val[1], full_probs(clf, x_val, num_classes))
        if best is None or score > best.val_score:
            best = Probe(scaler, clf, C, score, num_classes)
    assert best is not None
    return best


def probe_on_cache(ctx: RegimeContext, params: ProbeParams) -> tuple[Probe, FeatureCache]:
    """Fit the probe on the domain's cached features (the run's train rows; ``class_weight`` follows
    ``train.loss_weighting``); a cache that does not match the prepared train split is an error."""
    cache = FeatureCache(ctx.features_dir, ctx.params.model)
    x, y = cache.read("train")
    if not np.array_equal(y, np.asarray(ctx.data["train"]["label"], dtype=np.int64)):
        raise ValueError(f"the feature cache {cache.dir} of {ctx.domain.name} does not match the prepared train "
                         "split; re-run the extract stage")
    if ctx.train_indices is not None:
        x, y = x[ctx.train_indices], y[ctx.train_indices]
    probe = fit_probe((x, y), cache.read("validation"), params.C_grid, metric=ctx.metric,
                      max_iter=params.max_iter, seed=ctx.seed, class_weight=ctx.class_weight,
                      num_classes=ctx.data["train"].features["label"].num_classes)
    return probe, cache
