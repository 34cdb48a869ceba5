"""``partial``: the last ``blocks`` backbone blocks and the head train (timm ``group_matcher`` blocks, BERT
layers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, StrictInt

from shared.config import TrainOverrides
from shared.regimes.base import RegimeContext
from shared.regimes.finetune import FineTune, train_only
from shared.registry import register_regime

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier


class PartialParams(TrainOverrides):
    """Partial fine-tuning: the last ``blocks`` backbone blocks and the head train."""

    blocks: StrictInt = Field(default=2, ge=1)


@register_regime
class Partial(FineTune[PartialParams]):
    """The last k blocks + head; the rest stays frozen (with its BatchNorm statistics)."""

    name: ClassVar[str] = "partial"
    description: ClassVar[str] = "last k backbone blocks + head, discriminative learning rates"
    Params = PartialParams

    def select(self, model: Classifier, ctx: RegimeContext) -> None:
        """Only the last ``blocks`` blocks and the head train."""
        blocks = model.blocks()
        k = self.params.blocks
        if k > len(blocks):
            raise ValueError(f"{ctx.domain.name}.regimes.partial.blocks={k} but the backbone has only "
                             f"{len(blocks)} blocks")
        train_only(model, {name for block in blocks[-k:] for name in block})
