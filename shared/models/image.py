"""timm image backbones behind the small classifier interface (see :mod:`shared.models`)."""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import timm
import torch
from timm.models import group_parameters
from torch import nn

from shared.config import ModelParams
from shared.models.base import Classifier
from shared.models.weights import OFFLINE_IMAGE_WEIGHTS, WeightsUnavailableError

log = logging.getLogger(__name__)
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUTHY = {"1", "ON", "YES", "TRUE"}
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` as set *now* (huggingface_hub reads them only at import)."""
    return any(os.environ.get(var, "").strip().upper() in TRUTHY for var in OFFLINE_ENV)


def cached_weights(name: str) -> str | None:
    """A local copy of ``name``'s default pretrained weights (HF hub or torch hub cache), or None."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else HUB_FILENAMES:
            path = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(path, str):
                return path
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(str(cfg.url)).path).name
        if path.is_file():
            return str(path)
    return None


def _pretrained_kwargs(params: ModelParams) -> dict[str, Any]:
    if params.weights_file:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": params.weights_file}}
    offline = OFFLINE_IMAGE_WEIGHTS.get(params.backbone)
    if offline is not None:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(offline())}}
    if hub_offline():
        # decide before timm asks the hub: it would retry for a minute without a network
        cached = cached_weights(params.backbone)
        if cached is None:
            raise WeightsUnavailableError(
                f"pretrained weights for '{params.backbone}' are not available offline (HF_HUB_OFFLINE is set "
                "and no local copy is cached); set model.weights_file to a local weights file, or "
                "model.pretrained: false for random init"
            )
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    return {"pretrained": True}


class ImageClassifier(Classifier):
    """A timm model fed uint8 images (B, 3, H, W); normalisation follows the backbone's data config."""

    modality: ClassVar[Literal["image", "text"]] = "image"
    model: Any  # a timm model: forward_features, forward_head, get_classifier, group_matcher
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, params: ModelParams, num_classes: int, pretrained: bool, **model_kwargs: Any) -> None:
        super().__init__()
        names = timm.list_models()
        if params.backbone not in names:
            close = difflib.get_close_matches(params.backbone, names, n=5, cutoff=0.6)
            examples = close or sorted(OFFLINE_IMAGE_WEIGHTS)
            raise ValueError(f"unknown timm backbone '{params.backbone}'; e.g. {examples} "
                             f"(offline pretrained weights: {sorted(OFFLINE_IMAGE_WEIGHTS)}; "
                             f"timm.list_models() lists all {len(names)})")
        kwargs: dict[str, Any] = {"num_classes": num_classes, **model_kwargs}
        if pretrained:
            kwargs.update(_pretrained_kwargs(params))
        try:
            self.model = timm.create_model(params.backbone, **kwargs)
        except (OSError, RuntimeError, ValueError) as err:
            if not pretrained:
                raise
            raise WeightsUnavailableError(
                f"pretrained weights for '{params.backbone}' cannot be had ({type(err).__name__}: {err}); "
                "set model.weights_file to a local file, or model.pretrained: false for random init"
            ) from None
        config = timm.data.resolve_model_data_config(self.model)
        self.image_size = params.image_size or int(config["input_size"][-1])
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.head_name = "model." + self.model.pretrained_cfg.get("classifier", "classifier")
        self.num_features = int(self.model.num_features)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0-255) images -> normalised float input."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> Any:
        """Logits; in training mode a model with auxiliary heads returns ``(logits, *aux_logits)``."""
        return self.model(self.normalize(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (B, num_features)."""
        return self.model.forward_head(self.model.forward_features(self.normalize(images)), pre_logits=True)

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]  # the head lives inside the timm model
        """The classification head (a Linear layer)."""
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise TypeError(f"{type(self.model).__name__}'s classifier is a {type(head).__name__}, not a Linear")
        return head

    def _groups(self) -> list[list[str]]:
        groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
        return [[f"model.{n}" for n in names] for names in groups.values()]

    def head_parameter_names(self) -> set[str]:
        """The classifier and every parameter timm groups with it (e.g. auxiliary heads)."""
        head = {f"model.{n}" for n, p in self.model.named_parameters()
                if any(p is q for q in self.model.get_classifier().parameters())}
        return {n for group in self._groups() if head & set(group) for n in group} | head

    def blocks(self) -> list[list[str]]:
        """Backbone parameter names grouped into blocks, input side first (timm ``group_matcher``);
        the head's group (classifier, auxiliary heads) is not a block."""
        head = self.head_parameter_names()
        return [kept for group in self._groups() if (kept := [n for n in group if n not in head])]

    def lora_targets(self) -> list[str]:
        """Default LoRA targets: every 1x1 (pointwise) convolution and Linear layer except the head."""
        head = self.model.get_classifier()
        return [f"model.{n}" for n, m in self.model.named_modules()
                if m is not head and (isinstance(m, nn.Linear)
                                      or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1))]
