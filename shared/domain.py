"""The domain plugin contract: data + task + defaults. The backbone is configuration, not code."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from datasets import DatasetDict

from shared.config import DomainParams

Modality = Literal["image", "text"]
Task = Literal["binary", "multiclass", "multilabel"]
Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")


class Domain:
    """Base class of every domain plugin.

    Subclasses set the class attributes and implement :meth:`fetch` and :meth:`load_splits`.
    ``load_splits`` returns a :class:`datasets.DatasetDict` with ``train``/``validation``/``test``
    (``validation`` may be missing: ``prepare`` then derives it from train, stratified and seeded),
    an ``image`` (datasets ``Image``) or ``text`` column, and a ``label`` ``ClassLabel`` column whose
    names are the same in every split.
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    task: ClassVar[Task]
    datasets: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[DomainParams]] = DomainParams
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(self, params: DomainParams) -> None:
        self.params = params

    @property
    def input_column(self) -> str:
        """``image`` or ``text``."""
        return "image" if self.modality == "image" else "text"

    def fetch(self, raw_dir: Path) -> None:
        """Obtain the raw files of ``self.params.data.dataset`` into ``raw_dir`` via :mod:`shared.sources`."""
        raise NotImplementedError

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Read the fetched raw files into a ``DatasetDict`` (see the class docstring)."""
        raise NotImplementedError
