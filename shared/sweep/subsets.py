"""The labelled subsets of a sweep, and how a small one fills an epoch."""

from __future__ import annotations

import math

import numpy as np


def stratified_indices(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 2) -> np.ndarray:
    """Sorted train indices: ``round(fraction * n_c)`` (at least ``min_per_class``, at most ``n_c``) items of
    every class c, drawn by a seeded per-class permutation (so, for one seed, subsets are nested)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(members), max(min_per_class, int(round(fraction * len(members)))))
        chosen.append(members[:k])
    return np.sort(np.concatenate(chosen))


def epoch_rows(idx: np.ndarray, batch_size: int, epochs: int, min_steps: int) -> np.ndarray:
    """The labelled subset as each epoch sees it: ``idx`` repeated whole until an epoch holds at least
    ``ceil(min_steps / epochs)`` batches (so ``epochs`` epochs take at least ``min_steps`` optimizer steps,
    with the domain's per-epoch validation unchanged); ``idx`` itself when it is already large enough."""
    rows_needed = math.ceil(min_steps / epochs) * batch_size
    return np.tile(idx, max(1, math.ceil(rows_needed / len(idx))))
