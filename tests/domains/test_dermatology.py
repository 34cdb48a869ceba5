"""dermatology (ISIC imagefolder): label map rules, manifest, bad images, archive sources."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domains.dermatology import Dermatology, DermatologyParams, verify_manifest
from shared.data.images import BadImageError
from shared.data.sources import SourceError
from shared.data.splits import LabelMapError


def jpeg_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 3, manifest: bool = True) -> Path:
    seed = 0
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i}.jpg").write_bytes(jpeg_bytes(seed))
                seed += 1
    if manifest:
        write_manifest(root)
    return root


def write_manifest(root: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*.jpg"))]
    (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def domain(**data: object) -> Dermatology:
    return Dermatology(DermatologyParams.model_validate({"data": data}))


def test_mirror_fetch_and_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "mirror" / "isic-malignant-benign")
    monkeypatch.setenv("TRANSFERLAB_MIRROR", str(tmp_path / "mirror"))
    d = domain()
    d.fetch(tmp_path / "raw")
    dd = d.load_splits(tmp_path / "raw")
    assert dd["train"].features["label"].names == ["benign", "malignant"]
    assert {s: len(dd[s]) for s in dd} == {"train": 6, "test": 6}
    assert dd["test"][0]["image"].mode == "RGB" and d.load_report["quarantined"] == []


def test_manifest_mismatch_and_unlisted_file_raise(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "isic")
    (root / "train" / "benign" / "0.jpg").write_bytes(jpeg_bytes(99))
    with pytest.raises(SourceError, match="0.jpg"):
        verify_manifest(root)
    write_manifest(root)
    (root / "test" / "benign" / "new.jpg").write_bytes(jpeg_bytes(98))
    with pytest.raises(SourceError, match="not listed"):
        verify_manifest(root)


def test_label_map_rules(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "raw" / "images", manifest=False)
    (root / "test" / "malignant").rename(root / "test" / "melanoma")
    with pytest.raises(LabelMapError, match="differ"):
        domain().load_splits(tmp_path / "raw")
    (root / "test" / "melanoma").rename(root / "test" / "malignant")
    (root / "train" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(LabelMapError, match="hidden"):
        domain().load_splits(tmp_path / "raw")
    (root / "train" / ".DS_Store").unlink()
    (root / "train" / "benign" / ".hidden.jpg").write_bytes(jpeg_bytes(5))
    with pytest.raises(LabelMapError, match="hidden"):
        domain().load_splits(tmp_path / "raw")


def test_case_only_duplicate_class_folders_raise(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "raw" / "images", manifest=False)
    for split in ("train", "test"):
        (root / split / "Benign").mkdir()
    with pytest.raises(LabelMapError, match="case"):
        domain().load_splits(tmp_path / "raw")


def test_bad_image_fails_or_is_quarantined(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "raw" / "images", manifest=False)
    (root / "train" / "malignant" / "trunc.jpg").write_bytes(jpeg_bytes(7)[:200])
    (root / "test" / "benign" / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="trunc.jpg"):
        domain().load_splits(tmp_path / "raw")
    d = domain(bad_images="quarantine")
    dd = d.load_splits(tmp_path / "raw")
    assert len(dd["train"]) == 6 and len(dd["test"]) == 6
    files = sorted(q["file"] for q in d.load_report["quarantined"])
    assert files == ["test/benign/empty.jpg", "train/malignant/trunc.jpg"]
    assert all(q["reason"] for q in d.load_report["quarantined"])
    assert d.load_report["dropped"] == {"bad_image": 2}


def test_archive_source_by_file_url(tmp_path: Path) -> None:
    make_tree(tmp_path / "src" / "skin")
    archive = tmp_path / "skin.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "skin", arcname="skin")
    d = domain(source=archive.as_uri())
    d.fetch(tmp_path / "raw")
    assert len(d.load_splits(tmp_path / "raw")["train"]) == 6
    with pytest.raises(SourceError, match="neither"):
        domain(source=str(tmp_path / "nope")).fetch(tmp_path / "raw2")


@pytest.mark.skipif(not os.environ.get("TRANSFERLAB_MIRROR"), reason="needs TRANSFERLAB_MIRROR")
def test_real_mirror_counts(tmp_path: Path) -> None:
    d = domain()
    d.fetch(tmp_path)
    dd = d.load_splits(tmp_path)
    assert np.bincount(dd["train"]["label"]).tolist() == [1440, 1197]
    assert np.bincount(dd["test"]["label"]).tolist() == [360, 300]
