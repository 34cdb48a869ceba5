"""What fine-tuning regimes share: freezing, BatchNorm statistics, the new head, discriminative learning
rates, and :class:`FineTune`, the base of every regime that trains the whole network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from shared.config import TrainParams
from shared.regimes.base import NetworkRegime, P, Prepared, RegimeContext

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def freeze_batchnorm_stats(model: nn.Module, *, all_layers: bool = False) -> None:
    """Mark BatchNorm layers whose affine parameters are frozen (or every one, ``all_layers``) so that
    training keeps them in eval mode, with their running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            module.frozen_stats = all_layers or (  # type: ignore[assignment]  # a flag set_train_mode reads
                bool(params) and not any(p.requires_grad for p in params))


def zero_head(model: Classifier) -> None:
    """Zero the classifier head (BiT's init for transfer: the first loss is log(classes))."""
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers of frozen blocks, which keep their running statistics."""
    model.train()
    for module in model.modules():
        if getattr(module, "frozen_stats", False):
            module.eval()


def init_head_from_probe(head: nn.Linear, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Copy a logistic-regression probe (in raw feature space) into the Linear head.

    A binary probe has one row ``w``: the head gets rows ``[0, w]`` so softmax equals the probe's sigmoid.
    """
    coef = np.atleast_2d(coef)
    intercept = np.atleast_1d(intercept)
    if coef.shape[0] == 1 and head.out_features == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    if coef.shape != tuple(head.weight.shape):
        raise ValueError(f"probe weights {coef.shape} do not fit head {tuple(head.weight.shape)}")
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))


def discriminative_groups(model: Classifier, lr: float, factor: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: the head at ``lr``, the backbone at ``lr x factor``."""
    head_names = model.head_parameter_names()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n in head_names]
    body = [p for n, p in named if n not in head_names]
    groups = [{"params": head, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    if body:
        groups.append({"params": body, "lr": lr * factor, "weight_decay": weight_decay, "name": "backbone"})
    return groups


def train_only(model: Classifier, names: set[str]) -> None:
    """Freeze every parameter except those named (and the head's)."""
    keep = names | model.head_parameter_names()
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)


class FineTune(NetworkRegime[P]):
    """Train what :meth:`select` leaves trainable, with discriminative learning rates.

    The new head starts at zero unless ``train.head_init: random`` (or :attr:`keeps_head`); BatchNorm layers
    of a pretrained backbone keep their running statistics when ``train.batchnorm: frozen``, and layers
    whose affine parameters are frozen always do.
    """

    keeps_head: ClassVar[bool] = False  # the head was initialised on purpose (lp_ft's probe)

    def select(self, model: Classifier, ctx: RegimeContext) -> None:
        """Set ``requires_grad``: every parameter trains by default."""
        model.requires_grad_(True)

    def lr_factor(self, train: TrainParams) -> float:
        """The backbone's learning rate as a fraction of the head's."""
        return train.backbone_lr_factor if self.pretrained else 1.0

    def prepare(self, model: Classifier, ctx: RegimeContext) -> Prepared:
        """Zero the head, select what trains, freeze BatchNorm statistics, build the optimizer groups."""
        train = self.train_params(ctx.params)
        if not self.keeps_head and train.head_init == "zeros":
            zero_head(model)
        self.select(model, ctx)
        freeze_batchnorm_stats(model, all_layers=self.pretrained and train.batchnorm == "frozen")
        return Prepared(model, discriminative_groups(model, train.lr, self.lr_factor(train), train.weight_decay))

