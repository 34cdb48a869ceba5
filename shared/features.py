"""Frozen-feature extraction, the on-disk feature cache (safetensors, keyed by backbone), and the
linear probe (scikit-learn logistic regression, C chosen on validation)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader

from shared.atomic import write_safetensors
from shared.data import in_split_order, split_batch
from shared.metrics import auroc


def backbone_slug(name: str) -> str:
    """A file-system-safe key for a backbone name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", name)


def cache_key(model_params: Any) -> dict[str, Any]:
    """What the cached features depend on (stored beside them and checked on read)."""
    return {k: getattr(model_params, k) for k in ("backbone", "pretrained", "weights_file", "image_size",
                                                 "max_length")}


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, F) float32 and labels (N,) over ``loader`` (in the split's order), eval mode."""
    model.eval()
    feats, labels = [], []
    for batch in loader:
        inputs, y = split_batch(batch)
        inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
        feats.append(model.features(inputs).float().cpu().numpy())
        labels.append(y.numpy())
    features, targets = in_split_order(loader.dataset, np.concatenate(feats), np.concatenate(labels))
    return features, targets.astype(np.int64)


class FeatureCache:
    """``<features_dir>/<backbone-slug>/{train,validation,test}.safetensors`` + ``meta.json``."""

    def __init__(self, features_dir: Path, model_params: Any) -> None:
        self.dir = features_dir / backbone_slug(model_params.backbone)
        self.key = cache_key(model_params)

    def path(self, split: str) -> Path:
        """The file of one split."""
        return self.dir / f"{split}.safetensors"

    def write(self, split: str, features: np.ndarray, labels: np.ndarray) -> None:
        """Store one split."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.path(split), {"features": np.ascontiguousarray(features), "labels": labels})
        (self.dir / "meta.json").write_text(json.dumps(self.key, indent=2))

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Load one split; a cache made for other model settings is an error, not a silent reuse."""
        meta = self.dir / "meta.json"
        if not meta.is_file() or json.loads(meta.read_text()) != self.key:
            raise FileNotFoundError(f"no features for {self.key} in {self.dir}; run the extract stage")
        arrays = load_file(str(self.path(split)))
        return arrays["features"], arrays["labels"]


@dataclass
class Probe:
    """A fitted probe: scaler + logistic regression, the chosen C, and its validation score."""

    scaler: StandardScaler
    classifier: LogisticRegression
    C: float
    val_score: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C)."""
        return self.classifier.predict_proba(self.scaler.transform(features))

    def raw_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients and intercept in the unscaled feature space (for initialising a Linear head)."""
        scale = self.scaler.scale_
        coef = self.classifier.coef_ / scale
        intercept = self.classifier.intercept_ - (self.classifier.coef_ * self.scaler.mean_ / scale).sum(1)
        return coef, intercept


def probe_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probe's selection metric: AUROC for binary tasks, accuracy otherwise."""
    if probs.shape[1] == 2:
        return auroc(labels, probs)
    return float((probs.argmax(1) == labels).mean())


def fit_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], C_grid: list[float],
              *, max_iter: int, seed: int, class_weight: str | None = None) -> Probe:
    """Fit one logistic regression per C on train features; keep the best on validation."""
    scaler = StandardScaler().fit(train[0])
    # a (near-)constant feature would get a scale of ~1e-9 and, folded into a Linear head (raw_weights,
    # lp_ft), weights of ~1e9 that turn to inf in float32: floor the scale at 1e-3 of the median scale
    scaler.scale_ = np.maximum(scaler.scale_, 1e-3 * float(np.median(scaler.scale_)))
    x_train, x_val = scaler.transform(train[0]), scaler.transform(val[0])
    best: Probe | None = None
    for C in C_grid:
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, class_weight=class_weight)
        clf.fit(x_train, train[1])
        score = probe_score(val[1], clf.predict_proba(x_val))
        if best is None or score > best.val_score:
            best = Probe(scaler, clf, C, score)
    assert best is not None
    return best
