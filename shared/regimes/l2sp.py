"""``l2sp``: full fine-tuning pulled towards the pretrained weights (Li, Grandvalet & Davoine 2018,
"Explicit inductive bias for transfer learning with convolutional networks", eq. 3):

    Omega(w) = alpha / 2 * ||w_S - w0_S||^2 + beta / 2 * ||w_head||^2

``w_S`` the backbone's weights, ``w0_S`` their pretrained values, ``w_head`` the new head. The penalty
replaces weight decay (AdamW's decay is off in this regime), as in the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import nn

from shared.config import TrainOverrides
from shared.regimes.base import Penalty, Prepared, RegimeContext
from shared.regimes.finetune import FineTune
from shared.registry import register_regime

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier


class L2SPParams(TrainOverrides):
    """L2-SP strengths: ``alpha`` towards the pretrained backbone, ``beta`` plain L2 on the head."""

    alpha: float = Field(default=0.01, ge=0)
    beta: float = Field(default=0.01, ge=0)


def l2sp_penalty(model: Classifier, alpha: float, beta: float) -> Penalty:
    """The L2-SP term of ``model``'s current weights against the values they have now (the start point)."""
    head_names = model.head_parameter_names()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    body = [(p, p.detach().clone()) for n, p in named if n not in head_names]
    head = [p for n, p in named if n in head_names]

    def penalty(_: nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=head[0].device if head else "cpu")
        for p, p0 in body:
            if p0.device != p.device:  # the model moved to the accelerator after prepare
                p0.data = p0.data.to(p.device)
            total = total + alpha / 2 * (p - p0).pow(2).sum()
        for p in head:
            total = total + beta / 2 * p.pow(2).sum()
        return total

    return penalty


@register_regime
class L2SP(FineTune[L2SPParams]):
    """Every weight trains; the loss adds L2-SP instead of weight decay."""

    name: ClassVar[str] = "l2sp"
    description: ClassVar[str] = "full fine-tuning pulled towards the pretrained weights (L2-SP)"
    Params = L2SPParams

    def prepare(self, model: Classifier, ctx: RegimeContext) -> Prepared:
        """Full fine-tuning groups without weight decay, plus the L2-SP penalty."""
        prepared = super().prepare(model, ctx)
        for group in prepared.param_groups:
            group["weight_decay"] = 0.0
        prepared.penalty = l2sp_penalty(model, self.params.alpha, self.params.beta)
        return prepared
