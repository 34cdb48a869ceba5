"""The classical ``baseline`` regime: TF-IDF (text) or raw pixels (images) + logistic regression.

Text: word 1-2 gram TF-IDF (sublinear tf, ``max_features``) fitted on train. Images: every image
decoded to RGB, resized to ``pixel_size`` x ``pixel_size`` (bilinear), scaled to [0, 1] and flattened;
grey data sets (every train image has R == G == B) keep one channel. The inverse regularisation ``C`` is
chosen on validation from ``C_grid`` by the domain's primary metric; ties keep the smaller C.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from pydantic import Field, StrictInt
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.config import DomainParams, PosFloat, Strict
from shared.data.images import to_rgb
from shared.evaluation.metrics import selection_score
from shared.evaluation.predictions import Predictions
from shared.regimes.base import PACKAGE, FittedRegime, RegimeContext
from shared.regimes.probe import full_probs
from shared.registry import register_regime
from shared.training.loop import peak_memory_mb

MAX_ITER = 2000
MODEL_LABELS = {"text": "tfidf+logreg", "image": "pixels+logreg"}
log = logging.getLogger(__name__)


class BaselineParams(Strict):
    """Classical baseline: TF-IDF (text) or raw pixels (images) + logistic regression."""

    C_grid: list[PosFloat] = Field(default_factory=lambda: [0.1, 1.0, 10.0], min_length=1)
    max_features: StrictInt = Field(default=50000, ge=10)
    pixel_size: StrictInt = Field(default=28, ge=4, le=128)


def pixel_features(images: Dataset | Sequence[Image.Image], size: int, grey: bool | None = None
                   ) -> tuple[np.ndarray, bool]:
    """Flattened [0, 1] pixels (N, size*size*channels) of ``images`` (a split's ``image`` column, or PIL
    images) and whether they are grey.

    ``grey=None`` detects it: True when every image has identical R, G and B channels.
    """
    column = images["image"] if isinstance(images, Dataset) else images
    arrays = [np.asarray(to_rgb(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
              for img in column]
    stack = np.stack(arrays) / 255.0
    if grey is None:
        grey = bool(np.all(stack[..., :1] == stack))
    if grey:
        stack = stack[..., :1]
    return stack.reshape(len(stack), -1), grey


@dataclass
class BaselineFit:
    """A fitted baseline: validation and test probabilities, the scikit-learn objects to keep
    (``classifier``, and ``vectorizer`` for text), the image settings (``pixel_size``, ``grey``) and C."""

    val_probs: np.ndarray
    test_probs: np.ndarray
    objects: dict[str, Any]
    settings: dict[str, Any]
    C: float


def _features(dd: DatasetDict, modality: str, params: BaselineParams
              ) -> tuple[tuple[np.ndarray | sparse.spmatrix, ...], dict[str, Any], dict[str, Any]]:
    """(train, validation, test) features, the fitted feature objects and the image settings."""
    if modality == "text":
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=params.max_features, sublinear_tf=True)
        train = vectorizer.fit_transform(dd["train"]["text"])
        return ((train, vectorizer.transform(dd["validation"]["text"]), vectorizer.transform(dd["test"]["text"])),
                {"vectorizer": vectorizer}, {})
    if modality == "image":
        train, grey = pixel_features(dd["train"], params.pixel_size)
        return ((train, pixel_features(dd["validation"], params.pixel_size, grey)[0],
                 pixel_features(dd["test"], params.pixel_size, grey)[0]),
                {}, {"pixel_size": params.pixel_size, "grey": grey})
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def fit_baseline(dd: DatasetDict, modality: str, params: BaselineParams, seed: int,
                 class_weight: str | None, metric: str) -> BaselineFit:
    """Fit the baseline on train, choose C on validation by ``metric``; class probabilities of validation
    and test, and what to keep."""
    num_classes = dd["train"].features["label"].num_classes
    (x_train, x_val, x_test), objects, settings = _features(dd, modality, params)
    y_train, y_val = np.asarray(dd["train"]["label"]), np.asarray(dd["validation"]["label"])
    best: tuple[float, float, LogisticRegression] | None = None
    for C in params.C_grid:
        clf = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed, class_weight=class_weight)
        clf.fit(x_train, y_train)
        score = selection_score(metric, y_val, full_probs(clf, x_val, num_classes))
        if best is None or score > best[0]:
            best = (score, C, clf)
    assert best is not None  # C_grid has at least one value (BaselineParams)
    score, C, clf = best
    log.info("baseline (%s): C=%g chosen on validation (score %.4f)", modality, C, score)
    return BaselineFit(full_probs(clf, x_val, num_classes), full_probs(clf, x_test, num_classes),
                       {**objects, "classifier": clf}, settings, C)


@register_regime
class Baseline(FittedRegime[BaselineParams]):
    """Is deep transfer worth it at all? No backbone: TF-IDF or raw pixels + logistic regression."""

    name: ClassVar[str] = "baseline"
    description: ClassVar[str] = "classical baseline: TF-IDF / raw pixels + logistic regression"
    Params = BaselineParams
    pretrained: ClassVar[bool] = False
    uses_backbone: ClassVar[bool] = False

    def model_label(self, dp: DomainParams, modality: str) -> str:
        """``tfidf+logreg`` or ``pixels+logreg``."""
        return MODEL_LABELS[modality]

    def fit(self, ctx: RegimeContext, out: Path) -> tuple[Predictions, dict[str, Any]]:
        """Fit on the run's train rows; keep the fitted objects as a servable package when asked."""
        dd = ctx.splits()
        t0 = time.perf_counter()
        fitted = fit_baseline(dd, ctx.domain.modality, self.params, ctx.seed, ctx.class_weight, ctx.metric)
        seconds = time.perf_counter() - t0
        labels = {s: np.asarray(dd[s]["label"], dtype=np.int64) for s in ("validation", "test")}
        if ctx.card is not None:
            from shared.serving.package import save_baseline

            save_baseline(fitted.objects, out / PACKAGE, replace(ctx.card, kind="baseline", baseline=fitted.settings))
        return Predictions(fitted.val_probs, labels["validation"], fitted.test_probs, labels["test"]), {
            "train_seconds": seconds, "train_samples_per_second": len(dd["train"]) / seconds,
            "peak_memory_mb": peak_memory_mb(torch.device("cpu")), "baseline_C": fitted.C}
