"""Pure metric functions over labels (N,) and class probabilities (N, C)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score


class DegenerateDataError(ValueError):
    """A split on which a metric is undefined (empty, single-class); never reported as NaN."""


def check_split(labels: np.ndarray, split: str, num_classes: int) -> None:
    """Raise :class:`DegenerateDataError` for an empty or single-class split."""
    if len(labels) == 0:
        raise DegenerateDataError(f"split '{split}' is empty")
    present = np.unique(labels)
    if len(present) < 2:
        raise DegenerateDataError(
            f"split '{split}' has a single class ({present.tolist()}); AUROC and F1 are undefined"
        )
    if present.max() >= num_classes or present.min() < 0:
        raise DegenerateDataError(f"split '{split}' has labels outside 0..{num_classes - 1}")


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUROC (positive class = 1) or macro one-vs-rest AUROC over the classes present."""
    num_classes = probs.shape[1]
    if num_classes == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    present = np.unique(labels)
    scores = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def basic_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, AUROC and the confusion matrix at argmax."""
    preds = probs.argmax(axis=1)
    num_classes = probs.shape[1]
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", labels=list(range(num_classes)),
                                   zero_division=0)),
        "auroc": auroc(labels, probs),
        "confusion_matrix": confusion_matrix(labels, preds, labels=list(range(num_classes))).tolist(),
    }


def evaluate_predictions(val_labels: np.ndarray, val_probs: np.ndarray, test_labels: np.ndarray,
                         test_probs: np.ndarray, *, task: str, class_names: list[str],
                         params: Any = None, seed: int = 0) -> dict[str, Any]:
    """All metrics for one run: ``{"validation": {...}, "test": {...}}`` (JSON-ready)."""
    num_classes = len(class_names)
    check_split(val_labels, "validation", num_classes)
    check_split(test_labels, "test", num_classes)
    return {"validation": basic_metrics(val_labels, val_probs), "test": basic_metrics(test_labels, test_probs)}
