"""Evaluation plots written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from shared.evaluation.metrics import ECE_BINS, calibration_bins, expected_calibration_error, operating_point  # noqa: E402


def save_note(text: str, path: Path) -> Path:
    """A small figure holding only ``text`` (a plots folder's content for a (domain, regime) that does not
    run: ``dvc plots show`` renders it, where an empty folder is an error)."""
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path,
                          title: str = "") -> Path:
    """A labelled confusion-matrix heat map (rows: true class, columns: predicted)."""
    cm = np.asarray(matrix)
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > cm.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finish(fig: Any, ax: Any, path: Path, title: str) -> Path:
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(labels: np.ndarray, probs: np.ndarray, task: str, class_names: list[str]
            ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, is-positive, score) per curve: the positive class for binary, one-vs-rest otherwise."""
    if task == "binary":
        return [(class_names[1], labels == 1, probs[:, 1])]
    return [(name, labels == c, probs[:, c]) for c, name in enumerate(class_names) if (labels == c).any()]


def save_roc_curve(labels: np.ndarray, probs: np.ndarray, task: str, class_names: list[str], path: Path,
                   threshold: float | None = None) -> Path:
    """ROC curve(s) with AUROC in the legend; the binary operating point at ``threshold`` is marked."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, positive, score in _curves(labels, probs, task, class_names):
        fpr, tpr, _ = roc_curve(positive, score)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(positive, score):.3f})")
    if task == "binary" and threshold is not None:
        point = operating_point(labels, probs[:, 1], threshold)
        ax.plot(1 - point["specificity"], point["sensitivity"], "ko",
                label=f"threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    return _finish(fig, ax, path, "ROC curve (test)")


def save_pr_curve(labels: np.ndarray, probs: np.ndarray, task: str, class_names: list[str],
                  path: Path) -> Path:
    """Precision-recall curve(s) with average precision in the legend and the prevalence baseline."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, positive, score in _curves(labels, probs, task, class_names):
        precision, recall, _ = precision_recall_curve(positive, score)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(positive, score):.3f})")
        if task == "binary":
            ax.axhline(positive.mean(), color="k", ls="--", lw=0.8, label=f"prevalence {positive.mean():.3f}")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, path, "precision-recall curve (test)")


def save_reliability_diagram(labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """Top-label reliability diagram (accuracy vs confidence per bin) with the ECE in the title."""
    bins = calibration_bins(labels, probs)
    fig, ax = plt.subplots(figsize=(5, 5))
    width = 1 / ECE_BINS
    ax.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "r.", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ece = expected_calibration_error(labels, probs)
    return _finish(fig, ax, path, f"reliability (test), ECE {ece:.3f}")


def save_evaluation_plots(labels: np.ndarray, probs: np.ndarray, task: str, class_names: list[str],
                          out_dir: Path, threshold: float | None = None) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``reliability.png`` in ``out_dir``; returns their paths."""
    labels, probs, out_dir = np.asarray(labels), np.asarray(probs), Path(out_dir)
    return [save_roc_curve(labels, probs, task, class_names, out_dir / "roc.png", threshold),
            save_pr_curve(labels, probs, task, class_names, out_dir / "pr.png"),
            save_reliability_diagram(labels, probs, out_dir / "reliability.png")]
