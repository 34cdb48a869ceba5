"""Split helpers: the stratified subsample when a class has a single item."""

from __future__ import annotations

import numpy as np

from shared.data.splits import _stratified_take, build_label_map, make_split


def test_stratified_take_handles_a_class_with_one_item() -> None:
    """max_eval_samples on a split where a rare class has a single item (datasets' stratified split
    refuses it): a proportional, seeded allocation, exactly n items."""
    labels = [0] * 50 + [1] * 30 + [2]
    ds = make_split([f"t{i}" for i in range(81)], labels, build_label_map(["a", "b", "c"]), modality="text",
                    source="t")
    taken = _stratified_take(ds, 20, seed=0)
    counts = np.bincount(taken["label"], minlength=3)
    assert len(taken) == 20 and counts.tolist() == [12, 8, 0]  # 12.35 / 7.41 / 0.25: largest remainder to b
    assert _stratified_take(ds, 20, seed=0)["text"] == taken["text"]
