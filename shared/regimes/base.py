"""The regime contract: what one transfer regime is, needs and does.

A regime is one class, registered by name (``@register_regime`` or the ``transferlab.regimes`` entry-point
group), with a pydantic ``Params`` model for its sub-section ``<domain>.regimes.<name>`` of ``params.yaml``.
It either *prepares a network* for the shared training loop (:class:`NetworkRegime`: freeze, unfreeze,
adapt, choose learning rates, optionally add a loss penalty) or *fits on its own* (:class:`FittedRegime`:
a scikit-learn model on cached features or raw inputs). Everything else -- the CLI, the DVC matrix, the
sweep, the report -- reads the registry, so adding a regime is one module (or one installed package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn

from shared.config import DomainParams, Strict, TrainParams

if TYPE_CHECKING:
    from shared.data.domain import Domain
    from shared.evaluation.predictions import Predictions
    from shared.models.base import Classifier
    from shared.serving.package import ModelCard

P = TypeVar("P", bound=Strict)
PACKAGE = "package"  # the servable model package's folder inside a regime's output folder
Penalty = Callable[[nn.Module], torch.Tensor]


@dataclass
class RegimeContext:
    """Everything a regime may read for one run.

    Attributes:
        domain: the domain plugin instance (name, modality, task, primary metric, params).
        seed: the run's seed.
        data: the prepared splits, whole.
        features_dir: the frozen-feature cache folder of the candidate backbone (``extract``'s output).
        train_indices: rows of the prepared train split this run uses, repeats allowed (``None``: all;
            the sweep passes a labelled subset). Regimes read train through :meth:`train_split` or take
            these rows of the cached train features.
        checkpoints: the resumable-checkpoint folder of network regimes (``None``: no checkpoints).
        card: write the servable model package (:mod:`shared.serving.package`) with this card into
            ``<out>/package`` (``None``: keep none, as in the sweep).
    """

    domain: Domain[Any]
    seed: int
    data: DatasetDict
    features_dir: Path
    train_indices: np.ndarray | None = None
    checkpoints: Path | None = None
    card: ModelCard | None = None

    def train_split(self) -> Dataset:
        """The train rows this run uses."""
        train = self.data["train"]
        return train if self.train_indices is None else train.select(self.train_indices)

    def splits(self) -> DatasetDict:
        """The prepared splits with train narrowed to :meth:`train_split`."""
        return DatasetDict({"train": self.train_split(), "validation": self.data["validation"],
                            "test": self.data["test"]})

    @property
    def params(self) -> DomainParams:
        """The domain's validated params section."""
        return self.domain.params

    @property
    def metric(self) -> str:
        """The selection metric: the domain's primary metric, on validation, everywhere."""
        return self.domain.primary_metric

    @property
    def class_weight(self) -> str | None:
        """scikit-learn ``class_weight`` matching ``train.loss_weighting`` (None for plain)."""
        return None if self.params.train.loss_weighting == "plain" else "balanced"


@dataclass
class Prepared:
    """A network made ready for the shared loop.

    Attributes:
        model: the model to train (possibly wrapped, e.g. by PEFT).
        param_groups: AdamW parameter groups (only trainable parameters).
        penalty: an extra loss term of the model's weights (e.g. L2-SP), added to every step's loss.
        info: facts to record in the run (e.g. the probe's C of lp_ft).
    """

    model: nn.Module
    param_groups: list[dict[str, Any]]
    penalty: Penalty | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Regime(Generic[P]):
    """Base class of every regime. Subclass :class:`NetworkRegime` or :class:`FittedRegime`.

    Class attributes:
        name: registry key, params key and DVC stage suffix (a Python identifier).
        description: one line for the CLI and the report.
        Params: the pydantic model of ``<domain>.regimes.<name>`` (its defaults must validate).
        pretrained: starts from pretrained backbone weights.
        needs_features: reads the domain's cached frozen features (``extract`` must have run).
        uses_backbone: its model is the domain's backbone (the classical baseline's is not).
        sweepable: may run on a labelled subset in the data-efficiency sweep (a regime that reads every
            train label, like lp_ft's probe, may not).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Strict]]
    pretrained: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False
    uses_backbone: ClassVar[bool] = True
    sweepable: ClassVar[bool] = True
    trains_network: ClassVar[bool]

    def __init__(self, params: P) -> None:
        self.params = params

    @classmethod
    def for_domain(cls, dp: DomainParams) -> Regime[Any]:
        """The regime configured by a domain's params section (an error if the section leaves it out)."""
        if not dp.runs(cls.name):
            raise ValueError(f"regime {cls.name!r} is left out by this domain's section (regimes.{cls.name}: false)")
        return cls(dp.regimes[cls.name])

    def train_params(self, dp: DomainParams) -> TrainParams:
        """The training-loop settings of this regime: the domain's ``train`` with this regime's overrides."""
        return dp.train_for(self.name)

    def model_label(self, dp: DomainParams, modality: str) -> str:
        """What the report shows as this regime's model (the domain's backbone by default)."""
        return dp.model.backbone


class NetworkRegime(Regime[P]):
    """A regime that trains a network through the shared loop (:func:`shared.training.run.train_network`)."""

    trains_network: ClassVar[bool] = True

    def prepare(self, model: Classifier, ctx: RegimeContext) -> Prepared:
        """Freeze / unfreeze / adapt ``model`` and return it with its optimizer groups."""
        raise NotImplementedError


class FittedRegime(Regime[P]):
    """A regime that fits its own model (no gradient loop), e.g. on cached features."""

    trains_network: ClassVar[bool] = False

    def fit(self, ctx: RegimeContext, out: Path) -> tuple[Predictions, dict[str, Any]]:
        """Fit, write what it keeps into ``out``, and return validation/test predictions and run facts."""
        raise NotImplementedError
