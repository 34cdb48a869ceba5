"""Pure metric functions over labels (N,) and class probabilities (N, C).

:func:`evaluate_predictions` is what the evaluate stage calls. Binary tasks get AUROC and AUPRC with
95% bootstrap CIs, an operating threshold chosen on *validation* (Youden's J, a target sensitivity, or a
fixed 0.5) and, at that threshold, sensitivity, specificity, balanced accuracy and the confusion matrix,
plus the expected calibration error. Multiclass tasks get accuracy, macro-F1, a per-class
precision/recall/F1 report, one-vs-rest macro AUROC with a bootstrap CI and the ECE.

Bootstrap resamples are stratified (each class resampled with replacement within itself, keeping the
class counts), so every resample holds every class and no metric is ever undefined; CIs are percentile
intervals. Nothing here returns NaN: undefined inputs raise :class:`DegenerateDataError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

ECE_BINS = 15
CI_LEVEL = 0.95
FIXED_THRESHOLD = 0.5
MetricFn = Callable[[np.ndarray, np.ndarray], float]


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


def check_probs(labels: np.ndarray, probs: np.ndarray, split: str, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``probs`` is a finite (N, num_classes) array matching ``labels``."""
    if probs.ndim != 2 or probs.shape != (len(labels), num_classes):
        raise ValueError(f"split '{split}': probabilities of shape {probs.shape}, expected "
                         f"({len(labels)}, {num_classes})")
    if not np.isfinite(probs).all():
        raise DegenerateDataError(f"split '{split}': probabilities contain NaN or inf")


def auprc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Binary area under the precision-recall curve (average precision, positive class = 1)."""
    return float(average_precision_score(labels == 1, probs[:, 1]))


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Accuracy at argmax."""
    return float((probs.argmax(axis=1) == labels).mean())


def macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro-F1 at argmax over all ``probs.shape[1]`` classes."""
    return float(f1_score(labels, probs.argmax(axis=1), average="macro",
                          labels=list(range(probs.shape[1])), zero_division=0))


METRICS: dict[str, MetricFn] = {"auroc": auroc, "auprc": auprc, "accuracy": accuracy, "macro_f1": macro_f1}


def _metric_fn(metric: str | MetricFn) -> MetricFn:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    return METRICS[metric]


def selection_score(metric: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """The model-selection score: ``metric`` (a domain's primary metric) of validation predictions.

    Early stopping, the best epoch, the probe's C and the baseline's C all use it.
    """
    return float(_metric_fn(metric)(labels, probs))


def stratified_resamples(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` bootstrap index sets (n, N), each resampling every class within itself (class counts kept)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(labels)), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[:, start:start + len(members)] = rng.choice(members, size=(n, len(members)), replace=True)
        start += len(members)
    return out


def _batch_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of a batch (B, N) via the rank-sum (Mann-Whitney U) formula, ties averaged."""
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _bootstrap_auroc(labels: np.ndarray, probs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUROC (binary, or macro one-vs-rest over the classes present) for every resample in ``idx``."""
    y = labels[idx]
    if probs.shape[1] == 2:
        return _batch_auc(y == 1, probs[idx, 1])
    return np.mean([_batch_auc(y == c, probs[idx, c]) for c in np.unique(labels)], axis=0)


def bootstrap_values(labels: np.ndarray, probs: np.ndarray, metric: str | MetricFn, n: int,
                     seed: int) -> np.ndarray:
    """The metric on ``n`` stratified bootstrap resamples (AUROC is vectorised; others loop)."""
    idx = stratified_resamples(labels, n, seed)
    if metric == "auroc":
        return _bootstrap_auroc(labels, probs, idx)
    fn = _metric_fn(metric)
    return np.array([fn(labels[i], probs[i]) for i in idx])


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, metric: str | MetricFn, n: int,
                 seed: int) -> tuple[float, float]:
    """Percentile 95% confidence interval of ``metric`` from ``n`` stratified resamples."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {n}")
    values = bootstrap_values(labels, probs, metric, n, seed)
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                     metric: str | MetricFn, n: int, seed: int) -> dict[str, float]:
    """Compare two regimes on the same items: ``metric(a) - metric(b)`` with a paired bootstrap.

    Both regimes are scored on the *same* stratified resamples. Returns ``diff`` (on the full set),
    ``ci_low``/``ci_high`` (95% percentile interval of the resampled differences) and a two-sided
    ``p_value`` (twice the smaller share of resampled differences on either side of 0, with the
    Monte-Carlo "+1" correction so it is never 0: at least ``2 / (n + 1)``; at most 1).
    """
    labels = np.asarray(labels)
    num_classes = probs_a.shape[1]
    check_split(labels, "test", num_classes)
    check_probs(labels, probs_a, "test (a)", num_classes)
    check_probs(labels, probs_b, "test (b)", num_classes)
    if n < 1:
        raise ValueError(f"paired bootstrap needs at least 1 resample, got {n}")
    fn = _metric_fn(metric)
    diffs = (bootstrap_values(labels, probs_a, metric, n, seed)
             - bootstrap_values(labels, probs_b, metric, n, seed))  # same seed -> same resamples
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    extreme = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    p_value = min(1.0, 2 * (extreme + 1) / (n + 1))
    return {"diff": fn(labels, probs_a) - fn(labels, probs_b), "ci_low": float(low), "ci_high": float(high),
            "p_value": p_value}


def calibration_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
                     ) -> list[dict[str, float]]:
    """Top-label reliability bins: equal-width confidence bins with mean confidence, accuracy, count.

    Empty bins are left out (so no NaN). Used by :func:`expected_calibration_error` and the plot.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "count": int(mask.sum()),
                         "confidence": float(confidence[mask].mean()),
                         "accuracy": float(correct[mask].mean())})
    return bins


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): count-weighted mean |accuracy - confidence| over top-label bins."""
    bins = calibration_bins(labels, probs, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str = "youden",
                     target_sensitivity: float = 0.9) -> float:
    """The operating threshold on positive-class scores (predict positive when ``score >= t``).

    ``youden``: maximises sensitivity + specificity - 1; ``target_sensitivity``: the highest threshold
    whose sensitivity reaches the target (the best specificity under that constraint); ``fixed``: 0.5.
    """
    if rule == "fixed":
        return FIXED_THRESHOLD
    fpr, tpr, thresholds = roc_curve(labels == 1, scores)
    finite = np.isfinite(thresholds)  # roc_curve's first threshold is +inf (nothing predicted positive)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if rule == "target_sensitivity":
        return float(thresholds[int(np.argmax(tpr >= target_sensitivity))])
    raise ValueError(f"unknown threshold rule {rule!r}; known: youden, target_sensitivity, fixed")


def operating_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, balanced accuracy, accuracy and the 2x2 confusion matrix at ``threshold``."""
    preds = (scores >= threshold).astype(int)
    cm = confusion_matrix(labels, preds, labels=[0, 1])
    (tn, fp), (fn, tp) = cm
    sensitivity = tp / (tp + fn)
    specificity = tn / (tn + fp)
    return {"threshold": float(threshold), "sensitivity": float(sensitivity),
            "specificity": float(specificity),
            "balanced_accuracy": float((sensitivity + specificity) / 2),
            "accuracy_at_threshold": float((preds == labels).mean()), "confusion_matrix": cm.tolist()}


def _with_ci(name: str, labels: np.ndarray, probs: np.ndarray, n: int, seed: int) -> dict[str, float]:
    out = {name: METRICS[name](labels, probs)}
    if n > 0:
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(labels, probs, name, n, seed)
    return out


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, *, bootstrap: int = 0,
                   seed: int = 0) -> dict[str, Any]:
    """Binary metrics: ``accuracy``/``macro_f1`` at argmax, AUROC/AUPRC (+ CIs when ``bootstrap``),
    ECE, and the operating point at ``threshold`` (its ``confusion_matrix`` is the one reported)."""
    return {"accuracy": accuracy(labels, probs), "macro_f1": macro_f1(labels, probs),
            **_with_ci("auroc", labels, probs, bootstrap, seed),
            **_with_ci("auprc", labels, probs, bootstrap, seed),
            "ece": expected_calibration_error(labels, probs),
            **operating_point(labels, probs[:, 1], threshold)}


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str], *,
                       bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """Multiclass metrics: accuracy, macro-F1, OvR macro AUROC (+ CI), ECE, per-class report, confusion."""
    preds = probs.argmax(axis=1)
    ids = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids,
                                                                     zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(class_names)}
    return {"accuracy": accuracy(labels, probs), "macro_f1": macro_f1(labels, probs),
            **_with_ci("auroc", labels, probs, bootstrap, seed),
            "ece": expected_calibration_error(labels, probs), "per_class": per_class,
            "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist()}


def evaluate_predictions(val_labels: np.ndarray, val_probs: np.ndarray, test_labels: np.ndarray,
                         test_probs: np.ndarray, *, task: str, class_names: list[str],
                         params: Any = None, seed: int = 0) -> dict[str, Any]:
    """All metrics for one run: ``{"validation": {...}, "test": {...}}`` (JSON-ready, no NaN).

    ``params`` is a :class:`shared.config.EvaluateParams` (None: its defaults). Bootstrap CIs are
    computed on test only. For binary tasks the threshold is chosen on validation and applied to both
    splits; ``test["threshold"]`` is that value.
    """
    from shared.config import EvaluateParams

    params = params if params is not None else EvaluateParams()
    num_classes = len(class_names)
    val_labels, test_labels = np.asarray(val_labels), np.asarray(test_labels)
    for split, labels, probs in (("validation", val_labels, val_probs), ("test", test_labels, test_probs)):
        check_split(labels, split, num_classes)
        check_probs(labels, probs, split, num_classes)
    if task == "binary":
        if num_classes != 2:
            raise ValueError(f"binary task with {num_classes} class names {class_names}")
        threshold = choose_threshold(val_labels, val_probs[:, 1], params.threshold, params.target_sensitivity)
        return {"validation": binary_metrics(val_labels, val_probs, threshold),
                "test": binary_metrics(test_labels, test_probs, threshold, bootstrap=params.bootstrap,
                                       seed=seed)}
    if task == "multiclass":
        return {"validation": multiclass_metrics(val_labels, val_probs, class_names),
                "test": multiclass_metrics(test_labels, test_probs, class_names, bootstrap=params.bootstrap,
                                           seed=seed)}
    raise ValueError(f"evaluate_predictions does not support task {task!r} (binary, multiclass)")
