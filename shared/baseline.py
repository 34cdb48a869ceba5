"""The classical ``baseline`` regime: TF-IDF (text) or raw pixels (images) + logistic regression.

Text: word 1-2 gram TF-IDF (sublinear tf, ``max_features``) fitted on train. Images: every image
decoded to RGB, resized to ``pixel_size`` x ``pixel_size`` (bilinear), scaled to [0, 1] and flattened;
grey data sets (every train image has R == G == B) keep one channel. The inverse regularisation ``C`` is
chosen on validation from ``C_grid`` with the frozen probe's selection metric
(:func:`shared.features.probe_score`: AUROC for binary tasks, accuracy otherwise); ties keep the
smaller C.
"""

from __future__ import annotations

import logging

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from shared.config import BaselineParams
from shared.features import probe_score
from shared.images import to_rgb

MAX_ITER = 2000
log = logging.getLogger(__name__)


def pixel_features(ds: Dataset, size: int, grey: bool | None = None) -> tuple[np.ndarray, bool]:
    """Flattened [0, 1] pixels (N, size*size*channels) of ``ds["image"]`` and whether they are grey.

    ``grey=None`` detects it: True when every image has identical R, G and B channels.
    """
    arrays = [np.asarray(to_rgb(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
              for img in ds["image"]]
    stack = np.stack(arrays) / 255.0
    if grey is None:
        grey = bool(np.all(stack[..., :1] == stack))
    if grey:
        stack = stack[..., :1]
    return stack.reshape(len(stack), -1), grey


def _features(dd: DatasetDict, modality: str, params: BaselineParams
              ) -> tuple[np.ndarray | sparse.spmatrix, ...]:
    if modality == "text":
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=params.max_features, sublinear_tf=True)
        train = vectorizer.fit_transform(dd["train"]["text"])
        return train, vectorizer.transform(dd["validation"]["text"]), vectorizer.transform(dd["test"]["text"])
    if modality == "image":
        train, grey = pixel_features(dd["train"], params.pixel_size)
        return (train, pixel_features(dd["validation"], params.pixel_size, grey)[0],
                pixel_features(dd["test"], params.pixel_size, grey)[0])
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def _full_probs(clf: LogisticRegression, x: np.ndarray | sparse.spmatrix, num_classes: int) -> np.ndarray:
    """Probabilities over every class of the label map (a class absent from train gets 0)."""
    out = np.zeros((x.shape[0], num_classes))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def fit_baseline(dd: DatasetDict, modality: str, params: BaselineParams, seed: int,
                 class_weight: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Fit the baseline on train, choose C on validation; return class probabilities (validation, test)."""
    num_classes = dd["train"].features["label"].num_classes
    x_train, x_val, x_test = _features(dd, modality, params)
    y_train, y_val = np.asarray(dd["train"]["label"]), np.asarray(dd["validation"]["label"])
    best: tuple[float, float, LogisticRegression] | None = None
    for C in params.C_grid:
        clf = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed, class_weight=class_weight)
        clf.fit(x_train, y_train)
        score = probe_score(y_val, _full_probs(clf, x_val, num_classes))
        if best is None or score > best[0]:
            best = (score, C, clf)
    assert best is not None  # C_grid has at least one value (BaselineParams)
    score, C, clf = best
    log.info("baseline (%s): C=%g chosen on validation (score %.4f)", modality, C, score)
    return _full_probs(clf, x_val, num_classes), _full_probs(clf, x_test, num_classes)
