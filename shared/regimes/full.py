"""``full``: every weight of the pretrained network trains, with discriminative learning rates."""

from __future__ import annotations

from typing import ClassVar

from shared.config import TrainOverrides
from shared.regimes.finetune import FineTune
from shared.registry import register_regime


@register_regime
class Full(FineTune[TrainOverrides]):
    """Full fine-tuning: backbone at ``lr x backbone_lr_factor``, head at ``lr``."""

    name: ClassVar[str] = "full"
    description: ClassVar[str] = "full fine-tuning, discriminative learning rates"
    Params = TrainOverrides
