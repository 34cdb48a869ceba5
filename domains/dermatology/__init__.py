"""Dermatology: ISIC dermoscopic images, malignant vs benign ("Skin Cancer: Malignant vs. Benign").

Layout (``imagefolder``): ``{train,test}/{benign,malignant}/*.jpg``, 224x224 RGB JPEG; the mirror
holds train 1440 benign / 1197 malignant, test 360 / 300 and a ``MANIFEST.sha256`` that is verified
(every listed file matches, no unlisted image). The ``source`` data param may name another folder, a
local archive or an archive URL (http, https, file) with the same layout; archives are downloaded with
:func:`shared.data.sources.download` (checked against ``source_sha256`` when given) and extracted with
:func:`shared.files.safe.safe_extract`.

Labels come from the class folder names, which must be the same two in train and test; the positive
class (index 1) is ``malignant``. Hidden files or folders (a leading ``.``) and stray files outside the
class folders raise. Every image is fully decoded at load time (:func:`shared.data.images.decode_image`);
with ``data.bad_images: quarantine`` a bad image is left out and listed in ``self.load_report``
(``quarantined``: ``{file, split, reason}``), which ``prepare`` adds to the audit; with ``fail``
(default) it raises naming the file. There is no validation split: ``prepare`` derives it from train.
The set contains near duplicates across train and test (several images of the same lesion): see the
audit (``shared.data.audit``) and ``data.dedupe_across_splits``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from datasets import DatasetDict
from pydantic import Field

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain, Task
from shared.data.images import BadImageError, decode_image
from shared.data.sources import RemoteFile, SourceError, download, file_digest, resolve
from shared.data.splits import LabelMapError, build_label_map, make_split
from shared.files.safe import safe_extract

MIRROR_DIR = "isic-malignant-benign"
MANIFEST = "MANIFEST.sha256"
IMAGES_DIR = "images"
SPLITS = ("train", "test")
POSITIVE = "malignant"
URL_SCHEMES = ("http://", "https://", "file://")


class DermatologyData(DataParams):
    """Data keys of the dermatology domain."""

    dataset: Literal["isic"] = "isic"
    source: str | None = None  # a folder, archive file or archive URL with the same layout
    source_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class DermatologyParams(DomainParams):
    """params.yaml section ``dermatology``."""

    data: DermatologyData = DermatologyData()
    model: ModelParams = ModelParams(backbone="tf_efficientnet_lite0", image_size=96)


def verify_manifest(root: Path) -> int:
    """Check ``root/MANIFEST.sha256`` (``<sha256>  <relative path>`` lines): every listed file exists
    and matches, and every file under the split folders is listed. Returns the number of files."""
    manifest = root / MANIFEST
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise SourceError(f"{manifest}:{number}: expected '<sha256>  <path>', got {line!r}")
        listed[rel] = digest
    for rel, digest in listed.items():
        path = root / rel
        if not path.is_file():
            raise SourceError(f"{manifest}: listed file {rel} is missing")
        actual = file_digest(path, "sha256")
        if actual != digest:
            raise SourceError(f"{path}: sha256 {actual} does not match {MANIFEST} ({digest})")
    present = {p.relative_to(root).as_posix() for s in SPLITS if (root / s).is_dir()
               for p in (root / s).rglob("*") if p.is_file()}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise SourceError(f"{manifest}: {len(unlisted)} file(s) not listed, e.g. {unlisted[:3]}")
    return len(listed)


def find_root(folder: Path) -> Path:
    """The folder holding ``train/`` and ``test/``: ``folder`` itself or its single sub-folder."""
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and all((subdirs[0] / s).is_dir() for s in SPLITS):
        return subdirs[0]
    raise SourceError(f"{folder}: expected train/ and test/ class folders (imagefolder layout)")


def class_folders(split_dir: Path) -> list[Path]:
    """The class folders of one split; hidden entries and stray files raise."""
    if not split_dir.is_dir():
        raise SourceError(f"{split_dir}: missing split folder")
    entries = sorted(split_dir.iterdir())
    for entry in entries:
        if entry.name.startswith("."):
            raise LabelMapError(f"{entry}: hidden entry in a split folder (remove it)")
        if not entry.is_dir():
            raise SourceError(f"{entry}: a file directly under {split_dir.name}/; expected class folders")
    return entries


def class_names(root: Path) -> list[str]:
    """The two class names shared by train and test, ordered so that ``malignant`` is index 1."""
    found = {s: [p.name for p in class_folders(root / s)] for s in SPLITS}
    if sorted(found["train"]) != sorted(found["test"]):
        raise LabelMapError(f"{root}: class folders differ: train {found['train']}, test {found['test']}")
    names = found["train"]
    build_label_map(names)  # case-only duplicates and blanks raise here
    if len(names) != 2 or POSITIVE not in names:
        raise LabelMapError(f"{root}: expected two class folders including '{POSITIVE}', got {names}")
    return sorted(names, key=lambda n: (n == POSITIVE, n))


class Dermatology(Domain[DermatologyParams]):
    """Binary: benign (0) vs malignant (1, positive). Primary metric AUROC.

    After :meth:`load_splits`, ``self.load_report`` holds ``{"quarantined": [{file, split, reason}],
    "dropped": {"bad_image": n}}`` for ``shared.data.audit.attach_load_report``.
    """

    name: ClassVar[str] = "dermatology"
    modality: ClassVar[Literal["image"]] = "image"
    task: Task = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("isic",)
    Params = DermatologyParams
    primary_metric: str = "auroc"

    def __init__(self, params: DermatologyParams) -> None:
        super().__init__(params)
        self.load_report: dict[str, Any] = {"quarantined": [], "dropped": {}}

    def fetch(self, raw_dir: Path) -> None:
        """Copy the mirror folder (manifest verified) or the ``source`` to ``raw_dir/images``."""
        dest = raw_dir / IMAGES_DIR
        if dest.exists():
            shutil.rmtree(dest)
        raw_dir.mkdir(parents=True, exist_ok=True)
        source = self.params.data.source
        if source is None:
            resolve(RemoteFile(mirror_path=MIRROR_DIR), dest)
            if not (dest / MANIFEST).is_file():
                raise SourceError(f"{dest}: the mirror copy of '{MIRROR_DIR}' has no {MANIFEST}")
        elif Path(source).expanduser().is_dir():
            shutil.copytree(Path(source).expanduser(), dest)
        else:
            archive = Path(source).expanduser()
            if source.startswith(URL_SCHEMES):
                archive = download(source, raw_dir / "source.archive", sha256=self.params.data.source_sha256)
            elif not archive.is_file():
                raise SourceError(f"data.source={source!r} is neither a folder, an archive file nor a URL")
            extracted = raw_dir / "extracted"
            shutil.rmtree(extracted, ignore_errors=True)
            safe_extract(archive, extracted)
            find_root(extracted).rename(dest)
            shutil.rmtree(extracted, ignore_errors=True)
            if archive.parent == raw_dir:
                archive.unlink()
        root = find_root(dest)
        if (root / MANIFEST).is_file():
            verify_manifest(root)
        class_names(root)

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Train and test from the class folders, every image fully decoded."""
        root = find_root(raw_dir / IMAGES_DIR)
        label_map = build_label_map(class_names(root))
        self.load_report = {"quarantined": [], "dropped": {}}
        splits = {}
        for split in SPLITS:
            images, labels = [], []
            for folder in class_folders(root / split):
                for path in sorted(folder.iterdir()):
                    item = self._read(path, root, split)
                    if item is not None:
                        images.append(item)
                        labels.append(folder.name)
            splits[split] = make_split(images, labels, label_map, modality="image", source=str(root / split))
        if self.load_report["quarantined"]:
            self.load_report["dropped"]["bad_image"] = len(self.load_report["quarantined"])
        return DatasetDict(splits)

    def _read(self, path: Path, root: Path, split: str) -> dict[str, Any] | None:
        """The encoded bytes of a fully-decodable image, or None when quarantined."""
        rel = path.relative_to(root).as_posix()
        if path.name.startswith("."):
            raise LabelMapError(f"{path}: hidden file in a class folder (remove it)")
        if not path.is_file():
            raise SourceError(f"{path}: expected an image file, found a folder or special file")
        data = path.read_bytes()
        try:
            decode_image(data, name=str(path))
        except BadImageError as err:
            if self.params.data.bad_images == "fail":
                raise
            self.load_report["quarantined"].append({"file": rel, "split": split, "reason": str(err)})
            return None
        return {"bytes": data, "path": rel}
