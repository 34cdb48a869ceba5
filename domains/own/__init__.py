"""Your own data as a domain, with no code: an image folder or a CSV / JSONL / Parquet table.

A ``params.yaml`` section whose name is not a registered domain becomes one when its ``data`` names a
``format`` (:func:`shared.registry.domain_class`)::

    skin:
      data: {format: imagefolder, path: /data/skin}     # <path>/<class>/* or <path>/{train,validation,test}/<class>/*
    notes:
      data: {format: csv, path: data/notes.csv, text_column: transcription, label_column: specialty,
             group_column: patient_id}

Files are read with the ``datasets`` packaged builders (``imagefolder`` with its ``metadata.csv``
convention, ``csv``, ``json``, ``parquet``). Labels are the class folders (or ``label_column`` of
``metadata.csv``) or the table's ``label_column``; the task is binary with two classes (positive: index 1,
the second name in sorted order, or ``data.positive_class``) and multiclass otherwise; the primary metric
is AUROC for binary, accuracy otherwise (``evaluate.primary_metric`` overrides). ``model`` and the other
sections are optional and default as for the built-in domains of the modality.

Splits: given splits (split folders, ``split_column`` with values train / validation / test) are kept;
a missing test split is held out from train (``data.test_fraction``), then validation
(``data.validation_fraction``), stratified and seeded. With a group key (``group_column``, a ``metadata.csv``
column for images, or ``group_pattern``, a regular expression over the file name whose first group, or
whole match, is the group: e.g. a patient id) every derived split is group-disjoint
(:func:`shared.data.splits.holdout`), and a group found in two *given* splits fails ``prepare`` naming it.

Bad input fails with the file, column or value named: a missing path, an empty folder, a column that does
not exist (the ones that do are listed), mixed label types, a label that looks continuous, one class or a
class with fewer than :data:`MIN_PER_CLASS` items, a text column that is mostly empty, non-UTF-8 text (file
and line). Unreadable images follow ``data.bad_images`` (``fail``, or ``quarantine``: left out, listed in
the audit); empty texts are dropped and counted. ``max_train_samples`` subsamples before images are decoded.

``fetch`` reads nothing into the repository: it checks the source and writes ``summary.json`` (classes,
counts, splits) to ``data/raw/<name>``. The source itself is a DVC dependency through the link
``data/sources/<name>`` (:func:`shared.paths.source_link`), so editing one of its files re-runs the stages.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset
from datasets import Image as ImageFeature
from datasets.utils import logging as datasets_logging
from pydantic import Field, field_validator, model_validator

from shared import paths
from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import SPLITS, Domain, Modality, Task
from shared.data.images import BadImageError, decode_image
from shared.data.sources import SourceError
from shared.data.splits import LabelMapError, build_label_map, holdout, make_split, shared_groups
from shared.evaluation.metrics import DegenerateDataError
from shared.files.atomic import write_json

Format = Literal["imagefolder", "csv", "jsonl", "parquet"]
BUILDER = {"imagefolder": "imagefolder", "csv": "csv", "jsonl": "json", "parquet": "parquet"}
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
MIN_PER_CLASS = 3
SPLIT_SEED = 0  # derived splits: the same test set for every experiment seed
MOSTLY_EMPTY = 0.5  # a text column with more empty cells than this share is refused
DEFAULT_MODEL = {"image": {"backbone": "tf_efficientnet_lite0", "image_size": 128},
                 "text": {"backbone": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 128}}


class OwnData(DataParams):
    """The ``data`` keys of an own-data section."""

    format: Format
    path: str
    dataset: str = ""  # a name for reports and MLflow tags; default: the path's file or folder name
    label_column: str = "label"
    text_column: str = "text"
    group_column: str | None = None
    group_pattern: str | None = None
    split_column: str | None = None
    positive_class: str | None = None
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _defaults(self) -> OwnData:
        if not self.dataset:
            self.dataset = Path(self.path).name or "own"
        if self.group_column and self.group_pattern:
            raise ValueError("give group_column or group_pattern, not both")
        return self

    @field_validator("group_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"group_pattern {value!r} is not a regular expression: {err}") from None
        return value


class OwnParams(DomainParams):
    """An own-data section: ``data`` is required, ``model`` defaults by modality."""

    data: OwnData
    model: ModelParams

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            modality = "image" if raw["data"].get("format") == "imagefolder" else "text"
            given = raw.get("model") or {}
            if isinstance(given, dict):
                raw = {**raw, "model": {**DEFAULT_MODEL[modality], **given}}
        return raw


@contextmanager
def quiet_builders() -> Iterator[None]:
    """No ``datasets`` progress bars while a builder reads the user's files (restored afterwards)."""
    enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            datasets_logging.enable_progress_bar()


def source_path(data: OwnData) -> Path:
    """``data.path`` resolved (relative paths from the project root); a missing path raises."""
    path = Path(data.path).expanduser()
    if not path.is_absolute():
        path = paths.root() / path
    if not path.exists():
        raise SourceError(f"data.path {data.path!r}: no such file or folder ({path})")
    return path


def check_classes(counts: dict[str, int], where: str) -> None:
    """Refuse labels that cannot be a classification task, naming the classes."""
    if len(counts) < 2:
        raise DegenerateDataError(f"{where}: a single class {sorted(counts)}; classification needs two or more")
    small = {k: v for k, v in counts.items() if v < MIN_PER_CLASS}
    if small:
        raise DegenerateDataError(f"{where}: class(es) with fewer than {MIN_PER_CLASS} items: {small}")


def label_names(values: list[Any], where: str) -> list[str]:
    """Class names of a label column, refusing mixed types and continuous-looking values."""
    kinds = {type(v).__name__ for v in values if v is not None}
    if len(kinds - {"int"}) > 0 and "str" in kinds and len(kinds) > 1:
        raise LabelMapError(f"{where}: mixed label types {sorted(kinds)}")
    if "float" in kinds:
        floats = np.asarray([v for v in values if v is not None], dtype=float)
        if np.any(floats != np.round(floats)) or len(np.unique(floats)) > max(20, len(floats) // 10):
            raise LabelMapError(f"{where}: labels look continuous ({len(np.unique(floats))} distinct numbers, "
                                f"e.g. {floats[:3].tolist()}); transferlab needs class labels")
    names = sorted({str(int(v)) if isinstance(v, float) else str(v) for v in values if v is not None},
                   key=lambda n: (0, int(n), "") if re.fullmatch(r"-?\d+", n) else (1, 0, n))
    return names


def label_values(ds: Dataset, column: str) -> list[str]:
    """A label column as class names (a ``ClassLabel``'s names, integral floats as integers)."""
    feature = ds.features[column]
    values = ds[column]
    if hasattr(feature, "int2str"):
        return [feature.int2str(int(v)) for v in values]
    return [str(int(v)) if isinstance(v, float) else str(v) for v in values]


def ordered_classes(names: list[str], positive: str | None, where: str) -> list[str]:
    """``names`` with ``positive`` last (index 1 of a binary task)."""
    if positive is None:
        return names
    if positive not in names:
        raise LabelMapError(f"{where}: data.positive_class {positive!r} is not a class; classes: {names}")
    return [n for n in names if n != positive] + [positive]


class OwnDomain(Domain[OwnParams]):
    """Base of the own-data domains; :meth:`named` makes the class of one params section."""

    formats: ClassVar[tuple[str, ...]]
    datasets: ClassVar[tuple[str, ...]] = ()
    Params = OwnParams
    task: Task = "multiclass"

    def __init__(self, params: OwnParams) -> None:
        self.load_report: dict[str, Any] = {"quarantined": [], "dropped": {}}
        super().__init__(params)

    @classmethod
    def named(cls, name: str) -> type[OwnDomain]:
        """A subclass whose ``name`` is the params section's."""
        return type(f"{cls.__name__}_{name}", (cls,), {"name": name, "__module__": cls.__module__})

    @classmethod
    def task_for(cls, params: OwnParams) -> tuple[Task, str]:
        """Binary (AUROC) for two classes, else multiclass (accuracy), from the source's labels."""
        n = len(cls.classes(params))
        return ("binary", "auroc") if n == 2 else ("multiclass", "accuracy")

    @classmethod
    def classes(cls, params: OwnParams) -> list[str]:
        """The class names in label-id order."""
        raise NotImplementedError

    def read(self) -> tuple[dict[str, Dataset], str]:
        """The source as the ``datasets`` builder gives it, split by split, and the label column."""
        raise NotImplementedError

    def source(self) -> Path:
        """The user's files (``data.path``)."""
        return source_path(self.params.data)

    def fetch(self, raw_dir: Path) -> None:
        """Check the source and write ``summary.json``; nothing is copied."""
        splits, label = self.read()
        summary = {"path": str(source_path(self.params.data)), "format": self.params.data.format,
                   "classes": self.classes(self.params),
                   "splits": {s: dict(Counter(label_values(ds, label))) for s, ds in splits.items()}}
        raw_dir.mkdir(parents=True, exist_ok=True)
        write_json(raw_dir / "summary.json", summary)

    def groups_of(self, ds: Dataset, where: str) -> np.ndarray | None:
        """The group key of every row (``group_column`` or ``group_pattern``), or None without one."""
        data = self.params.data
        if data.group_column:
            if data.group_column not in ds.column_names:
                raise SourceError(f"{where}: no column {data.group_column!r} (data.group_column); "
                                  f"columns: {ds.column_names}")
            return np.asarray([str(g) for g in ds[data.group_column]])
        return None

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Every split: given ones kept, missing ones derived (group-disjoint with a group key)."""
        data = self.params.data
        where = str(source_path(data))
        self.load_report = {"quarantined": [], "dropped": {}}
        splits, label_col = self.read()
        names = ordered_classes(self.classes(self.params), data.positive_class, where)
        label_map = build_label_map(names)
        given_groups = {s: self.groups_of(ds, f"{where} ({s})") for s, ds in splits.items()}
        if all(g is not None for g in given_groups.values()) and len(splits) > 1:
            overlap = shared_groups({s: list(g) for s, g in given_groups.items() if g is not None})
            if overlap:
                pair, groups = next(iter(overlap.items()))
                raise DegenerateDataError(f"{where}: group(s) {groups[:5]} appear in both "
                                          f"{pair.replace('/', ' and ')} (given splits must be group-disjoint)")
        splits = dict(splits)
        for missing, fraction in (("test", data.test_fraction), ("validation", data.validation_fraction)):
            if missing in splits:
                continue
            train = splits["train"]
            labels = np.asarray(label_values(train, label_col))
            kept, held = holdout(labels, fraction, SPLIT_SEED, self.groups_of(train, where))
            splits["train"], splits[missing] = train.select(kept), train.select(held)
        if data.max_train_samples is not None and len(splits["train"]) > data.max_train_samples:
            train = splits["train"]
            labels = np.asarray(label_values(train, label_col))
            kept, _ = holdout(labels, len(train) - data.max_train_samples, SPLIT_SEED)
            splits["train"] = train.select(kept)  # before any image is decoded
        self.load_report["groups"] = {s: (None if (g := self.groups_of(splits[s], where)) is None
                                          else len(set(g.tolist()))) for s in SPLITS}
        return DatasetDict({s: self.encode(splits[s], s, label_col, label_map, where) for s in SPLITS})

    def encode(self, ds: Dataset, split: str, label_col: str, label_map: Any, where: str) -> Dataset:
        """One split in the pipeline's form (``image``/``text`` + ``label`` ``ClassLabel``)."""
        raise NotImplementedError


class ImageFolder(OwnDomain):
    """An image folder: ``<path>/<class>/*`` or ``<path>/<split>/<class>/*``, optional ``metadata.csv``."""

    name: ClassVar[str] = "imagefolder"
    modality: ClassVar[Modality] = "image"
    formats: ClassVar[tuple[str, ...]] = ("imagefolder",)
    datasets: ClassVar[tuple[str, ...]] = formats

    @classmethod
    def classes(cls, params: OwnParams) -> list[str]:
        data = params.data
        root = source_path(data)
        if not root.is_dir():
            raise SourceError(f"data.path {data.path!r}: format imagefolder needs a folder, got a file")
        metadata = root / "metadata.csv"
        if data.label_column != "label" and metadata.is_file():
            import pandas as pd

            table = pd.read_csv(metadata)
            if data.label_column not in table.columns:
                raise SourceError(f"{metadata}: no column {data.label_column!r} (data.label_column); "
                                  f"columns: {list(table.columns)}")
            return label_names(table[data.label_column].tolist(), str(metadata))
        dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if dirs and all(p.name.lower() in SPLIT_NAMES for p in dirs):
            dirs = [c for p in dirs for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")]
        names = sorted({p.name for p in dirs})
        if not names:
            raise SourceError(f"{root}: no class folders (expected <path>/<class>/* or <path>/<split>/<class>/*)")
        return names

    def read(self) -> tuple[dict[str, Dataset], str]:
        data = self.params.data
        root = source_path(data)
        with tempfile.TemporaryDirectory(prefix="imagefolder-") as cache, quiet_builders():
            try:
                dd = load_dataset("imagefolder", data_dir=str(root), drop_labels=False, cache_dir=cache)
            except (FileNotFoundError, ValueError) as err:
                raise SourceError(f"{root}: cannot read as an image folder: {err}") from None
            dd = DatasetDict({SPLIT_NAMES.get(s.lower(), s): ds.cast_column("image", ImageFeature(decode=False))
                              for s, ds in dd.items()})
            splits = {s: ds.flatten_indices() for s, ds in dd.items()}
        if "train" not in splits:
            raise SourceError(f"{root}: no train split (found {sorted(splits)})")
        label_col = data.label_column
        for s, ds in splits.items():
            if len(ds) == 0:
                raise SourceError(f"{root}: the {s} split is empty")
            if label_col == "label" and "label" not in ds.column_names:
                # with a metadata.csv the builder adds no folder labels: the class is the parent folder
                ds = ds.add_column("label", [Path(item["path"]).parent.name for item in ds["image"]])
                splits[s] = ds
            if label_col not in ds.column_names:
                raise SourceError(f"{root} ({s}): no label column {label_col!r}; columns: {ds.column_names}")
        counts = Counter(v for ds in splits.values() for v in label_values(ds, label_col))
        check_classes(dict(counts), str(root))
        return splits, label_col

    def groups_of(self, ds: Dataset, where: str) -> np.ndarray | None:
        pattern = self.params.data.group_pattern
        if pattern is None:
            return super().groups_of(ds, where)
        out = []
        for item in ds["image"]:
            file = Path(item["path"]).name
            match = re.search(pattern, file)
            if match is None:
                raise SourceError(f"{item['path']}: file name does not match data.group_pattern {pattern!r}")
            out.append(match.group(1) if match.groups() else match.group(0))
        return np.asarray(out)

    def encode(self, ds: Dataset, split: str, label_col: str, label_map: Any, where: str) -> Dataset:
        images, labels = [], []
        quarantine = self.params.data.bad_images == "quarantine"
        for item, label in zip(ds["image"], label_values(ds, label_col), strict=True):
            try:
                images.append(decode_image(item["path"] or item["bytes"], name=item["path"]))
            except BadImageError as err:
                if not quarantine:
                    raise
                self.load_report["quarantined"].append({"file": item["path"], "split": split, "reason": str(err)})
                self.load_report["dropped"]["bad_image"] = self.load_report["dropped"].get("bad_image", 0) + 1
                continue
            labels.append(label)
        return make_split(images, labels, label_map, modality="image", source=f"{where} ({split})")


class Table(OwnDomain):
    """A CSV, JSON Lines or Parquet table with a text column and a label column."""

    name: ClassVar[str] = "table"
    modality: ClassVar[Modality] = "text"
    formats: ClassVar[tuple[str, ...]] = ("csv", "jsonl", "parquet")
    datasets: ClassVar[tuple[str, ...]] = formats

    @classmethod
    def classes(cls, params: OwnParams) -> list[str]:
        table = cls.table(params)
        return label_names(table[params.data.label_column], str(source_path(params.data)))

    @staticmethod
    def table(params: OwnParams) -> Dataset:
        """The whole table as one ``Dataset``, its columns checked."""
        data = params.data
        path = source_path(data)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if not files:
            raise SourceError(f"{path}: empty folder")
        for file in files:
            if data.format in ("csv", "jsonl"):
                check_utf8(file)
        with tempfile.TemporaryDirectory(prefix="table-") as cache, quiet_builders():
            try:
                ds = load_dataset(BUILDER[data.format], data_files=[str(f) for f in files], split="train",
                                  cache_dir=cache)
            except Exception as err:
                raise SourceError(f"{path}: cannot read as {data.format}: {type(err).__name__}: {err}") from None
            ds = ds.flatten_indices()
        if len(ds) == 0:
            raise SourceError(f"{path}: the table has no rows")
        wanted = [data.text_column, data.label_column, data.group_column, data.split_column]
        missing = [c for c in wanted if c is not None and c not in ds.column_names]
        if missing:
            raise SourceError(f"{path}: no column(s) {missing}; columns: {ds.column_names}")
        return ds

    def read(self) -> tuple[dict[str, Dataset], str]:
        data = self.params.data
        where = str(source_path(data))
        ds = self.table(self.params)
        texts = ds[data.text_column]
        empty = [i for i, t in enumerate(texts) if t is None or not str(t).strip()]
        if len(empty) > MOSTLY_EMPTY * len(ds):
            raise SourceError(f"{where}: text column {data.text_column!r} is mostly empty "
                              f"({len(empty)} of {len(ds)} rows)")
        if empty:
            self.load_report["dropped"]["empty_text"] = len(empty)
            ds = ds.select(sorted(set(range(len(ds))) - set(empty)))
        label_names(ds[data.label_column], where)  # mixed types / continuous labels raise
        check_classes(dict(Counter(label_values(ds, data.label_column))), where)
        if data.split_column is None:
            return {"train": ds}, data.label_column
        values = [str(v).strip().lower() for v in ds[data.split_column]]
        unknown = sorted({v for v in values if v not in SPLIT_NAMES})
        if unknown:
            raise SourceError(f"{where}: column {data.split_column!r} (data.split_column) has values {unknown[:5]}; "
                              f"expected train / validation / test")
        mapped = np.asarray([SPLIT_NAMES[v] for v in values])
        splits: dict[str, Dataset] = {s: ds.select(np.flatnonzero(mapped == s)) for s in SPLITS
                                      if (mapped == s).any()}
        if "train" not in splits:
            raise SourceError(f"{where}: column {data.split_column!r} names no train rows")
        return splits, data.label_column

    def encode(self, ds: Dataset, split: str, label_col: str, label_map: Any, where: str) -> Dataset:
        texts = [str(t) for t in ds[self.params.data.text_column]]
        return make_split(texts, label_values(ds, label_col), label_map, modality="text", source=f"{where} ({split})")


def check_utf8(file: Path) -> None:
    """Raise naming the file and line of the first bytes that are not UTF-8."""
    with file.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SourceError(f"{file}:{number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
