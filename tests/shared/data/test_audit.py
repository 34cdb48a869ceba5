"""Data audit: exact and near duplicates within/across splits, empty items, train-only dedupe."""

from __future__ import annotations

import io

import numpy as np
from datasets import DatasetDict
from PIL import Image

from shared.data.audit import attach_load_report, audit_splits, dhash, drop_cross_split_duplicates
from shared.data.splits import build_label_map, make_split

LABELS = build_label_map(["benign", "malignant"])


def blob(seed: int, size: int = 48) -> np.ndarray:
    """A distinct smooth random RGB image (low-frequency noise upsampled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def jpeg(array: np.ndarray, quality: int = 95) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return {"bytes": buf.getvalue(), "path": None}


def image_splits() -> DatasetDict:
    train = [blob(i) for i in range(12)]
    val = [blob(100 + i) for i in range(4)]
    test = [blob(200 + i) for i in range(4)]
    test[0] = train[0].copy()  # exact duplicate across train/test
    near = train[1].astype(np.int16)
    near[:, :, 0] += 6  # slightly brighter red channel
    val[0] = np.clip(near, 0, 255).astype(np.uint8)  # near duplicate across train/validation
    train[5] = train[4].copy()  # exact duplicate within train
    test[3] = np.full((48, 48, 3), 128, dtype=np.uint8)  # blank
    labels = lambda n: [i % 2 for i in range(n)]  # noqa: E731
    return DatasetDict(
        train=make_split(train, labels(12), LABELS, modality="image", source="train"),
        validation=make_split(val, labels(4), LABELS, modality="image", source="val"),
        test=make_split(test, labels(4), LABELS, modality="image", source="test"),
    )


def test_image_duplicates_found_within_and_across_splits() -> None:
    report = audit_splits(image_splits(), "image")
    exact = report["exact_duplicates"]
    assert exact["within_pairs"] == {"train": 1, "validation": 0, "test": 0}
    assert exact["across_pairs"]["train-test"] == 1
    near = report["near_duplicates"]
    assert near["across_pairs"] == {"train-validation": 1, "train-test": 0, "validation-test": 0}
    assert sum(near["within_pairs"].values()) == 0
    assert report["cross_split"]["train_indices"] == [0, 1]
    assert report["empty"]["test"] == [3]
    assert report["class_balance"]["train"] == {"benign": 6, "malignant": 6}


def test_reencoded_image_is_an_exact_pixel_duplicate_only_if_pixels_match() -> None:
    img = blob(7)
    dd = DatasetDict(
        train=make_split([jpeg(img), blob(8)], [0, 1], LABELS, modality="image", source="t"),
        validation=make_split([blob(9), blob(10)], [0, 1], LABELS, modality="image", source="v"),
        test=make_split([jpeg(img, quality=60), blob(11)], [0, 1], LABELS, modality="image", source="s"),
    )
    report = audit_splits(dd, "image")
    assert report["exact_duplicates"]["across_pairs"]["train-test"] == 0  # different JPEG -> different pixels
    assert report["near_duplicates"]["across_pairs"]["train-test"] == 1


def test_dhash_is_stable_under_small_changes() -> None:
    a = Image.fromarray(blob(3))
    b = Image.fromarray(np.clip(blob(3).astype(int) + 4, 0, 255).astype(np.uint8))
    c = Image.fromarray(blob(4))
    assert bin(dhash(a) ^ dhash(b)).count("1") <= 2
    assert bin(dhash(a) ^ dhash(c)).count("1") > 8


def test_dedupe_removes_only_from_train() -> None:
    dd = image_splits()
    report = audit_splits(dd, "image")
    out, removed = drop_cross_split_duplicates(dd, report)
    assert removed == 2
    assert len(out["train"]) == 10 and len(out["validation"]) == 4 and len(out["test"]) == 4
    assert out["test"]["image"][0].tobytes() == dd["test"]["image"][0].tobytes()
    assert audit_splits(out, "image")["cross_split"]["count"] == 0


def test_text_duplicates_use_normalised_text_and_count_empty() -> None:
    labels = build_label_map(["normal", "abnormal"])
    dd = DatasetDict(
        train=make_split(["The lungs are clear.", "Effusion  on the LEFT.", "  ", "cardiomegaly"],
                         [0, 1, 0, 1], labels, modality="text", source="t"),
        validation=make_split(["no acute disease", "effusion on the left."], [0, 1], labels, modality="text",
                              source="v"),
        test=make_split(["THE LUNGS\nARE   CLEAR.", "pneumothorax"], [1, 1], labels, modality="text",
                        source="s"),
    )
    report = audit_splits(dd, "text")
    assert report["near_duplicates"] is None
    assert report["exact_duplicates"]["across_pairs"] == {"train-validation": 1, "train-test": 1,
                                                          "validation-test": 0}
    assert len(report["exact_duplicates"]["label_conflicts"]) == 1  # "the lungs are clear." 0 vs 1
    assert report["empty"]["train"] == [2]
    out, removed = drop_cross_split_duplicates(dd, report)
    assert removed == 2 and out["train"]["text"] == ["  ", "cardiomegaly"]


def test_load_report_is_attached() -> None:
    class Fake:
        load_report = {"quarantined": [{"file": "train/x.jpg", "split": "train", "reason": "truncated"}],
                       "dropped": {"bad_image": 1}}

    report = attach_load_report({}, Fake())
    assert report["quarantined"][0]["file"] == "train/x.jpg" and report["dropped"] == {"bad_image": 1}
    assert attach_load_report({}, object()) == {"quarantined": [], "dropped": {}}
