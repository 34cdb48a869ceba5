"""The domain plugin contract: data + task + defaults. The backbone is configuration, not code."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from datasets import DatasetDict

from shared import paths
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
        if params.evaluate.primary_metric is not None:
            self.primary_metric = params.evaluate.primary_metric

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

    def source(self) -> Path:
        """What this domain's stages depend on besides params and the project's code: the plugin's own code
        (its package folder, or its module file), so editing an installed plugin re-runs its stages.
        Own-data domains return the user's files. ``dvc.yaml`` reaches it through :func:`link_source`."""
        file = Path(inspect.getfile(type(self))).resolve()
        return file.parent if file.name == "__init__.py" else file


def link_source(domain: Domain[Any]) -> Path:
    """Point ``data/sources/<name>`` (:func:`shared.paths.source_link`, a dependency of every stage of the
    domain in ``dvc.yaml``) at :meth:`Domain.source`; an up-to-date link is left alone. The ``check``
    stage, which runs first in every ``dvc repro``, calls it for every domain of the run."""
    return point_link(paths.source_link(domain.name), domain.source())


def point_link(link: Path, target: Path) -> Path:
    """Make ``link`` a symlink to ``target``, atomically; an up-to-date link is left alone."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link
