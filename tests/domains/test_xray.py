"""xray (PneumoniaMNIST): content validation of the .npz and the official splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import domains.xray as xray
from shared.data.sources import SourceError

SIZES = {"train": 6, "val": 4, "test": 4}


def write_npz(path: Path, size: int = 28, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xray, "SPLIT_SIZES", SIZES)


def test_load_splits_maps_val_to_validation_and_grey_images(tmp_path: Path, small: None) -> None:
    write_npz(tmp_path / "pneumoniamnist.npz")
    domain = xray.Xray(xray.XrayParams())
    dd = domain.load_splits(tmp_path)
    assert {s: len(dd[s]) for s in dd} == {"train": 6, "validation": 4, "test": 4}
    assert dd["train"].features["label"].names == ["normal", "pneumonia"]
    assert dd["train"][0]["image"].mode == "L" and dd["train"][0]["image"].size == (28, 28)
    assert domain.primary_metric == "auroc" and domain.task == "binary"


@pytest.mark.parametrize(("override", "problem"), [
    ({"val_images": np.zeros((4, 28, 27), dtype=np.uint8)}, "val_images has shape"),
    ({"test_labels": np.array([[0], [2], [1], [0]], dtype=np.uint8)}, "test_labels has values"),
    ({"train_labels": np.zeros((6, 1), dtype=np.uint8)}, "train_labels has values"),
    ({"extra": np.zeros(1)}, "keys"),
    ({"train_images": np.zeros((5, 28, 28), dtype=np.uint8)}, r"expected \(6, 28, 28\)"),
])
def test_content_mismatch_raises_naming_file(tmp_path: Path, small: None, override: dict,
                                             problem: str) -> None:
    path = write_npz(tmp_path / "pneumoniamnist.npz", **override)
    with pytest.raises(SourceError, match=problem) as err:
        xray.read_npz(path, 28)
    assert str(path) in str(err.value)


def test_size_param_selects_file_and_url(tmp_path: Path, small: None) -> None:
    remote = xray.remote_file(64)
    assert remote.mirror_path == "medmnist/pneumoniamnist_64.npz" and remote.md5 is None
    assert remote.url == "https://zenodo.org/records/10519652/files/pneumoniamnist_64.npz?download=1"
    assert xray.remote_file(28).md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert not xray.remote_file(28).mirror_exact
    write_npz(tmp_path / "pneumoniamnist_64.npz", size=64)
    params = xray.XrayParams.model_validate({"data": {"size": 64}})
    assert len(xray.Xray(params).load_splits(tmp_path)["test"]) == 4


def test_fetch_from_mirror_validates(tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mirror" / "medmnist").mkdir(parents=True)
    write_npz(tmp_path / "mirror" / "medmnist" / "pneumoniamnist.npz")
    monkeypatch.setenv("TRANSFERLAB_MIRROR", str(tmp_path / "mirror"))
    xray.Xray(xray.XrayParams()).fetch(tmp_path / "raw")
    assert (tmp_path / "raw" / "pneumoniamnist.npz").is_file()


@pytest.mark.skipif(not os.environ.get("TRANSFERLAB_MIRROR"), reason="needs TRANSFERLAB_MIRROR")
def test_real_mirror_counts(tmp_path: Path) -> None:
    domain = xray.Xray(xray.XrayParams())
    domain.fetch(tmp_path)
    dd = domain.load_splits(tmp_path)
    assert {s: len(dd[s]) for s in dd} == {"train": 4708, "validation": 524, "test": 624}
    assert np.bincount(dd["test"]["label"]).tolist() == [234, 390]
