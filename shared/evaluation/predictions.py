"""Class probabilities on validation and test, written by ``train`` and read by ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from shared.files.atomic import write_safetensors


@dataclass
class Predictions:
    """Probabilities (N, C) and integer labels (N,) for the validation and test splits."""

    val_probs: np.ndarray
    val_labels: np.ndarray
    test_probs: np.ndarray
    test_labels: np.ndarray

    def save(self, path: Path) -> None:
        """Write as safetensors (atomically, reproducible bytes)."""
        write_safetensors(path, {k: np.ascontiguousarray(v) for k, v in vars(self).items()})

    @classmethod
    def load(cls, path: Path) -> Predictions:
        """Read a file written by :meth:`save`."""
        arrays = load_file(str(path))
        return cls(**{k: arrays[k] for k in ("val_probs", "val_labels", "test_probs", "test_labels")})
