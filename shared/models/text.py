"""Hugging Face text encoders (BERT family) with mean pooling and a linear head."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from shared.config import ModelParams
from shared.models.base import Classifier
from shared.models.weights import OFFLINE_TEXT_MODELS, WeightsUnavailableError


def model_source(params: ModelParams) -> str:
    """A local folder for offline names (packaged or converted MiniLMs, ``weights_file``, a path), else the
    hub name."""
    if params.weights_file:
        return params.weights_file
    offline = OFFLINE_TEXT_MODELS.get(params.backbone)
    if offline is not None:
        return str(offline())
    return params.backbone


def load_tokenizer(params: ModelParams) -> PreTrainedTokenizerBase:
    """The backbone's own tokenizer (preprocessing follows the backbone)."""
    source = model_source(params)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir()
                                             or os.environ.get("HF_HUB_OFFLINE") == "1")
    except OSError as err:
        raise WeightsUnavailableError(f"tokenizer for '{params.backbone}' cannot be had: {err}") from None


class TextClassifier(Classifier):
    """Encoder -> attention-masked mean pooling -> Linear head. Input: a tokenizer batch (dict)."""

    modality: ClassVar[Literal["image", "text"]] = "text"
    head_name = "head"

    def __init__(self, params: ModelParams, num_classes: int, pretrained: bool) -> None:
        super().__init__()
        source = model_source(params)
        local = Path(source).is_dir()
        try:
            if pretrained:
                self.encoder = AutoModel.from_pretrained(source, local_files_only=local, add_pooling_layer=False)
            else:
                config = AutoConfig.from_pretrained(source, local_files_only=local)
                self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        except OSError as err:
            raise WeightsUnavailableError(
                f"'{params.backbone}' cannot be loaded from {source} ({err}); set model.weights_file to a local "
                "model folder" + ("" if pretrained else "") + ", or install the asset package"
            ) from None
        self.num_features = int(self.encoder.config.hidden_size)
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the last hidden states over real (non-padding) tokens."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """Logits (B, num_classes)."""
        return self.head(self.features(batch))

    def blocks(self) -> list[list[str]]:
        """Encoder parameter names grouped as embeddings, layer 0 ... layer N-1."""
        groups: dict[str, list[str]] = {}
        for name, _ in self.encoder.named_parameters():
            parts = name.split(".")
            key = ".".join(parts[:3]) if parts[0] == "encoder" and parts[1] == "layer" else parts[0]
            groups.setdefault(key, []).append(f"encoder.{name}")
        return list(groups.values())

    def head_parameter_names(self) -> set[str]:
        """The Linear head's parameters."""
        return {f"head.{n}" for n, _ in self.head.named_parameters()}

    def lora_targets(self) -> list[str]:
        """Attention query and value projections (the LoRA paper's choice)."""
        return ["query", "value"]
