"""Split preparation shared by every domain: one label map, a derived validation split, subsampling,
and the degenerate-split checks (an empty or single-class split is an error, never a NaN metric)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from shared.config import DataParams
from shared.data.domain import SPLITS
from shared.evaluation.metrics import DegenerateDataError


class LabelMapError(ValueError):
    """Labels that cannot form one map across splits (unknown, case-only duplicates...)."""


def build_label_map(names: Sequence[str]) -> ClassLabel:
    """A ``ClassLabel`` over ``names`` (in the given order); case-only duplicates and blanks raise."""
    seen: dict[str, str] = {}
    for name in names:
        if not str(name).strip():
            raise LabelMapError(f"empty class name in {list(names)}")
        key = str(name).casefold()
        if key in seen:
            raise LabelMapError(f"class names '{seen[key]}' and '{name}' differ only by case")
        seen[key] = str(name)
    return ClassLabel(names=[str(n) for n in names])


def encode_labels(raw: Sequence[Any], label_map: ClassLabel, source: str) -> list[int]:
    """Map raw labels (names or integer ids) to ids of ``label_map``; unknown labels raise, naming ``source``."""
    ids: list[int] = []
    names = set(label_map.names)
    for value in raw:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < label_map.num_classes:
                raise LabelMapError(f"{source}: label id {value} outside 0..{label_map.num_classes - 1}")
            ids.append(int(value))
        elif str(value) in names:
            ids.append(label_map.str2int(str(value)))
        else:
            raise LabelMapError(f"{source}: unknown label {value!r}; known: {label_map.names}")
    return ids


def make_split(inputs: Sequence[Any], labels: Sequence[Any], label_map: ClassLabel, *,
               modality: str, source: str) -> Dataset:
    """A ``Dataset`` with an ``image`` (or ``text``) column and a ``label`` ``ClassLabel`` column."""
    if len(inputs) != len(labels):
        raise ValueError(f"{source}: {len(inputs)} inputs but {len(labels)} labels")
    column = "image" if modality == "image" else "text"
    features = Features({column: Image() if modality == "image" else Value("string"), "label": label_map})
    return Dataset.from_dict({column: list(inputs), "label": encode_labels(labels, label_map, source)},
                             features=features)


def _stratified_take(ds: Dataset, n: int, seed: int) -> Dataset:
    """``n`` items of ``ds``, stratified and seeded: ``datasets``' stratified split, or (when a class has a
    single item, which it refuses) a proportional allocation per class, largest remainders first."""
    if n >= len(ds):
        return ds
    try:
        return ds.train_test_split(train_size=n, stratify_by_column="label", seed=seed)["train"]
    except ValueError:
        labels = np.asarray(ds["label"])
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return ds.select(np.sort(np.concatenate(chosen)))


def check_splits(dd: DatasetDict) -> None:
    """One label map for all splits, and no empty or single-class split."""
    missing = [s for s in SPLITS if s not in dd]
    if missing:
        raise DegenerateDataError(f"missing split(s) {missing}; have {list(dd)}")
    reference = dd["train"].features["label"]
    for split in SPLITS:
        label = dd[split].features["label"]
        if not isinstance(label, ClassLabel) or label.names != reference.names:
            raise LabelMapError(f"split '{split}' label map {getattr(label, 'names', label)} "
                                f"differs from train's {reference.names}")
        ids = np.asarray(dd[split]["label"])
        if len(ids) == 0:
            raise DegenerateDataError(f"split '{split}' is empty")
        if len(np.unique(ids)) < 2:
            raise DegenerateDataError(f"split '{split}' has a single class ({reference.names[int(ids[0])]})")


def finalize_splits(dd: DatasetDict, data: DataParams, seed: int) -> DatasetDict:
    """Derive a stratified seeded validation split when missing, subsample, and check the result."""
    if "train" not in dd or "test" not in dd:
        raise DegenerateDataError(f"a domain must provide train and test splits; got {list(dd)}")
    out = DatasetDict(dd)
    if "validation" not in out:
        parts = out["train"].train_test_split(test_size=data.validation_fraction,
                                              stratify_by_column="label", seed=seed)
        out["train"], out["validation"] = parts["train"], parts["test"]
    if data.max_train_samples is not None:
        out["train"] = _stratified_take(out["train"], data.max_train_samples, seed)
    if data.max_eval_samples is not None:
        for split in ("validation", "test"):
            out[split] = _stratified_take(out[split], data.max_eval_samples, seed)
    out = DatasetDict({s: out[s] for s in SPLITS})
    check_splits(out)
    return out


def holdout(labels: np.ndarray, size: float | int, seed: int, groups: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into (kept, held out), stratified by label and seeded: ``size`` items held
    out (an int), or that share (a float; scikit-learn's rounding). With ``groups`` no group is on both sides:
    scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / share)`` folds, the first fold held out (class
    shares and the size kept as far as whole groups allow).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    positions = np.arange(len(labels))
    if groups is None:
        kept, held = train_test_split(positions, test_size=size, stratify=labels, random_state=seed)
        return np.sort(kept), np.sort(held)
    fraction = size / len(labels) if isinstance(size, int) else size
    n_groups = len(np.unique(groups))
    folds = min(max(2, round(1 / fraction)), n_groups)
    if folds < 2:
        raise DegenerateDataError(f"cannot hold out {fraction:.0%} of the items: they form a single group")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    kept, held = next(splitter.split(positions, labels, groups))
    return np.sort(kept), np.sort(held)


def shared_groups(groups: dict[str, Sequence[str]]) -> dict[str, list[str]]:
    """Groups found in more than one split: ``{"train/test": [group, ...]}`` (empty when disjoint)."""
    names = list(groups)
    out: dict[str, list[str]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(groups[a]) & set(groups[b]))
            if both:
                out[f"{a}/{b}"] = both
    return out
