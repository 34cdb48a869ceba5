"""Frozen-feature extraction and the on-disk feature cache (safetensors, keyed by backbone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.numpy import load_file
from torch.utils.data import DataLoader

from shared.data.loaders import in_split_order, split_batch
from shared.files.atomic import write_safetensors

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier


def cache_key(model_params: Any) -> dict[str, Any]:
    """What the cached features depend on (stored beside them and checked on read)."""
    return {k: getattr(model_params, k) for k in ("backbone", "pretrained", "weights_file", "image_size",
                                                 "max_length", "extract_precision")}


EXTRACTION = "extraction.json"


@torch.no_grad()
def extract_features(model: Classifier, loader: DataLoader, device: torch.device, precision: str = "fp32",
                     channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, F) float32 and labels (N,) over ``loader`` (in the split's order), eval mode; the
    backbone runs in bf16 autocast when ``precision`` is ``bf16`` (the features are stored in float32), and
    image batches go in channels-last with ``channels_last`` (a model already in that layout)."""
    model.eval()
    feats, labels = [], []
    for batch in loader:
        inputs, y = split_batch(batch)
        if isinstance(inputs, dict):
            inputs = {k: v.to(device) for k, v in inputs.items()}
        else:
            inputs = inputs.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            pooled = model.features(inputs)
        feats.append(pooled.float().cpu().numpy())
        labels.append(y.numpy())
    features, targets = in_split_order(loader.dataset, np.concatenate(feats), np.concatenate(labels))
    return features, targets.astype(np.int64)


class FeatureCache:
    """``<folder>/{train,validation,test}.safetensors`` + ``meta.json`` (the folder of one candidate backbone,
    :func:`shared.paths.features_dir`)."""

    def __init__(self, folder: Path, model_params: Any) -> None:
        self.dir = folder
        self.key = cache_key(model_params)

    def path(self, split: str) -> Path:
        """The file of one split."""
        return self.dir / f"{split}.safetensors"

    def write(self, split: str, features: np.ndarray, labels: np.ndarray,
              source_probs: np.ndarray | None = None) -> None:
        """Store one split; ``source_probs``: the pretrained model's own class probabilities (its source head,
        e.g. ImageNet's 1000 classes) of the same items, which LEEP and NCE score."""
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {"features": np.ascontiguousarray(features), "labels": labels}
        if source_probs is not None:
            arrays["source_probs"] = np.ascontiguousarray(source_probs, dtype=np.float32)
        write_safetensors(self.path(split), arrays)
        (self.dir / "meta.json").write_text(json.dumps(self.key, indent=2))

    def write_extraction(self, record: dict[str, Any]) -> None:
        """How the features were extracted (the precision choice and its timings, items per second)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / EXTRACTION).write_text(json.dumps(record, indent=2))

    def extraction(self) -> dict[str, Any]:
        """What :meth:`write_extraction` stored (empty for a cache written without it)."""
        path = self.dir / EXTRACTION
        return json.loads(path.read_text()) if path.is_file() else {}

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Load one split; a cache made for other model settings is an error, not a silent reuse."""
        meta = self.dir / "meta.json"
        if not meta.is_file() or json.loads(meta.read_text()) != self.key:
            raise FileNotFoundError(f"no features for {self.key} in {self.dir}; run the extract stage")
        arrays = load_file(str(self.path(split)))
        return arrays["features"], arrays["labels"]

    def read_source_probs(self, split: str) -> np.ndarray | None:
        """The source head's class probabilities of one split, or None when the backbone kept no source head."""
        self.read(split)  # the same key check
        return load_file(str(self.path(split))).get("source_probs")
