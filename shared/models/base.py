"""The backbone contract every regime relies on: one classifier interface over timm and Hugging Face.

:class:`Classifier` is the ``nn.Module`` base of every model ``build_model`` returns; it declares what the
regimes and the training loop use, so a type checker sees it and :func:`shared.testing.backbones.
check_backbone` verifies it on a real instance. (A ``typing.Protocol`` cannot also carry ``nn.Module``'s
own methods, which every caller needs as well, hence a base class.)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn


class Classifier(nn.Module):
    """A backbone with a Linear classification head.

    Attributes:
        modality: ``image`` (uint8 tensors (B, 3, H, W)) or ``text`` (tokenizer batches).
        head_name: the head's module path, for PEFT ``modules_to_save``.
        num_features: width of the pooled features the head reads.
        head: the Linear classification head (an attribute or a property).
    """

    modality: ClassVar[Literal["image", "text"]]
    head_name: str
    num_features: int
    head: nn.Linear

    def forward(self, inputs: Any) -> Any:
        """Logits (B, C); in training mode a model with auxiliary heads returns ``(logits, *aux_logits)``."""
        raise NotImplementedError

    def features(self, inputs: Any) -> torch.Tensor:
        """Pooled pre-logit features (B, num_features)."""
        raise NotImplementedError

    def head_parameter_names(self) -> set[str]:
        """Names of the head's parameters and of everything that trains with it (e.g. auxiliary heads)."""
        raise NotImplementedError

    def blocks(self) -> list[list[str]]:
        """Backbone parameter names grouped into blocks, input side first (partial fine-tuning)."""
        raise NotImplementedError

    def lora_targets(self) -> list[str]:
        """Module names that LoRA adapts by default."""
        raise NotImplementedError
