"""``scratch``: every weight trains from random init -- the baseline transfer has to beat."""

from __future__ import annotations

from typing import ClassVar

from shared.config import TrainOverrides
from shared.regimes.finetune import FineTune
from shared.registry import register_regime


@register_regime
class Scratch(FineTune[TrainOverrides]):
    """Random init, every weight trains at one learning rate; BatchNorm layers train their statistics."""

    name: ClassVar[str] = "scratch"
    description: ClassVar[str] = "from scratch (random init), every weight trains"
    Params = TrainOverrides
    pretrained: ClassVar[bool] = False
