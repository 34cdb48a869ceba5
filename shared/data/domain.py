"""The domain plugin contract: data + task + defaults. The backbone is configuration, not code."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from datasets import DatasetDict

from shared.config import DomainParams

Modality = Literal["image", "text"]
Task = Literal["binary", "multiclass"]  # multilabel is refused until metrics and training support it
Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
P = TypeVar("P", bound=DomainParams)


class Domain(Generic[P]):
    """Base class of every domain plugin.

    Subclasses set the class attributes and implement :meth:`fetch` and :meth:`load_splits`.
    ``load_splits`` returns a :class:`datasets.DatasetDict` with ``train``/``validation``/``test``
    (``validation`` may be missing: ``prepare`` then derives it from train, stratified and seeded),
    an ``image`` (datasets ``Image``) or ``text`` column, and a ``label`` ``ClassLabel`` column whose
    names are the same in every split.
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    datasets: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[DomainParams]] = DomainParams
    # the task and primary metric of the default dataset; an instance holds those of its own dataset
    # (see :meth:`task_for`), and everything downstream reads the instance's
    task: Task
    primary_metric: str = "accuracy"

    def __init__(self, params: P) -> None:
        self.params: P = params
        self.task, self.primary_metric = self.task_for(params)

    @classmethod
    def task_for(cls, params: P) -> tuple[Task, str]:
        """The task and primary metric for ``params`` (a domain whose datasets differ overrides this)."""
        return cls.task, cls.primary_metric

    @property
    def input_column(self) -> str:
        """``image`` or ``text``."""
        return "image" if self.modality == "image" else "text"

    def fetch(self, raw_dir: Path) -> None:
        """Obtain the raw files of ``self.params.data.dataset`` into ``raw_dir`` via :mod:`shared.data.sources`."""
        raise NotImplementedError

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Read the fetched raw files into a ``DatasetDict`` (see the class docstring)."""
        raise NotImplementedError
