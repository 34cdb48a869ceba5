"""``bitfit``: only the bias terms, the normalisation layers and the head train (Ben Zaken et al. 2022,
"BitFit"; AutoGluon's ``bit_fit`` tuning for image and text backbones)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import nn

from shared.config import TrainOverrides
from shared.regimes.base import RegimeContext
from shared.regimes.finetune import FineTune, train_only
from shared.registry import register_regime

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def bias_and_norm_names(model: nn.Module) -> set[str]:
    """Names of every bias and of every normalisation layer's parameters."""
    names = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            names |= {f"{module_name}.{n}" for n, _ in module.named_parameters(recurse=False)}
    return names


@register_regime
class BitFit(FineTune[TrainOverrides]):
    """Biases + norm layers + head train; BatchNorm running statistics stay as pretrained (``train.batchnorm``)."""

    name: ClassVar[str] = "bitfit"
    description: ClassVar[str] = "biases and norm layers + head (BitFit)"
    Params = TrainOverrides

    def select(self, model: Classifier, ctx: RegimeContext) -> None:
        """Only biases, normalisation parameters and the head train."""
        train_only(model, bias_and_norm_names(model))
