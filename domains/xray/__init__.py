"""Chest X-ray: PneumoniaMNIST (MedMNIST v2), paediatric chest radiographs, normal vs pneumonia.

The official ``.npz`` holds ``{train,val,test}_{images,labels}`` (images (N, S, S) uint8 grey, labels
(N, 1) in {0, 1}); the official validation split is used as validation. The mirror copy is a faithful
rebuild whose train order differs from the official file, so it is checked by content, not by md5:
keys, shapes, dtype, split sizes (4708/524/624; the same for every resolution of MedMNIST+) and the label
set. The ``size`` data param selects 28 (default) or the MedMNIST+ 64/128/224 files.

Grey images: the images are stored grey and, like every image in the pipeline, decoded to RGB through
:mod:`shared.data.images`, which replicates the grey channel three times. For a grey input this is exactly
equivalent to timm's ``in_chans=1`` adaptation (which sums the pretrained first-layer filters over RGB):
``sum_c W_c * x == W_sum * x`` when every channel equals ``x``. Replication needs no change to the
backbone, so it works for every timm / Hugging Face model, for LoRA on the first convolution, and for
cached features shared with the colour domains; the cost is two redundant input channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain, Task
from shared.data.sources import RemoteFile, SourceError, resolve
from shared.data.splits import build_label_map, make_split

OFFICIAL_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist{suffix}.npz?download=1"
OFFICIAL_MD5 = {28: "28209eda62fecd6e6a2d98b1501bb15f"}  # no published checksum for the other sizes
SPLIT_SIZES = {"train": 4708, "val": 524, "test": 624}
CLASS_NAMES = ["normal", "pneumonia"]
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class XrayData(DataParams):
    """Data keys of the xray domain."""

    dataset: Literal["pneumoniamnist"] = "pneumoniamnist"
    size: Literal[28, 64, 128, 224] = 28


class XrayParams(DomainParams):
    """params.yaml section ``xray``."""

    data: XrayData = XrayData()
    model: ModelParams = ModelParams(backbone="tf_efficientnet_lite0", image_size=64)


def file_name(size: int) -> str:
    """``pneumoniamnist.npz`` (28 px) or ``pneumoniamnist_<size>.npz``."""
    return f"pneumoniamnist{'' if size == 28 else f'_{size}'}.npz"


def remote_file(size: int) -> RemoteFile:
    """The official file for ``size``; mirror copies are checked by content (``mirror_exact=False``)."""
    suffix = "" if size == 28 else f"_{size}"
    return RemoteFile(mirror_path=f"medmnist/{file_name(size)}", url=OFFICIAL_URL.format(suffix=suffix),
                      md5=OFFICIAL_MD5.get(size), mirror_exact=False)


def read_npz(path: Path, size: int, split_sizes: dict[str, int] | None = None
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load and validate the file: ``{"train"|"val"|"test": (images (N,S,S) uint8, labels (N,))}``.

    ``split_sizes`` defaults to the module's ``SPLIT_SIZES`` (looked up at call time).

    Raises :class:`SourceError` naming the file and the problem (keys, shape, dtype, size, labels).
    """
    split_sizes = split_sizes if split_sizes is not None else SPLIT_SIZES
    expected = {f"{s}_{k}" for s in split_sizes for k in ("images", "labels")}
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: not a readable .npz file: {err}") from None
    with archive:
        if set(archive.files) != expected:
            raise SourceError(f"{path}: keys {sorted(archive.files)}, expected {sorted(expected)}")
        out = {}
        for split, n in split_sizes.items():
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            if images.shape != (n, size, size) or images.dtype != np.uint8:
                raise SourceError(f"{path}: {split}_images has shape {images.shape} {images.dtype}, "
                                  f"expected ({n}, {size}, {size}) uint8")
            if labels.shape not in ((n,), (n, 1)):
                raise SourceError(f"{path}: {split}_labels has shape {labels.shape}, expected ({n}, 1)")
            labels = labels.reshape(-1).astype(np.int64)
            if set(np.unique(labels).tolist()) != {0, 1}:
                raise SourceError(f"{path}: {split}_labels has values {np.unique(labels).tolist()}, "
                                  f"expected both of [0, 1]")
            out[split] = (images, labels)
    return out


class Xray(Domain[XrayParams]):
    """Binary: 0 normal, 1 pneumonia (positive). Primary metric AUROC."""

    name: ClassVar[str] = "xray"
    modality: ClassVar[Literal["image"]] = "image"
    task: Task = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("pneumoniamnist",)
    Params = XrayParams
    primary_metric: str = "auroc"

    def fetch(self, raw_dir: Path) -> None:
        """Resolve the ``.npz`` for ``data.size`` (mirror, else official download) and validate it."""
        size = self.params.data.size
        path = resolve(remote_file(size), raw_dir / file_name(size))
        read_npz(path, size)

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """The official train / val (-> validation) / test splits."""
        size = self.params.data.size
        path = raw_dir / file_name(size)
        label_map = build_label_map(CLASS_NAMES)
        return DatasetDict({
            SPLIT_NAMES[split]: make_split(list(images), labels.tolist(), label_map, modality="image",
                                           source=f"{path}:{split}")
            for split, (images, labels) in read_npz(path, size).items()
        })
