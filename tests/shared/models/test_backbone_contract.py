"""Every backbone in use meets the Classifier contract the regimes rely on (``check_backbone``), and the
checker names what a broken backbone gets wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from shared.config import ModelParams, load_params
from shared.models import build_model, load_tokenizer
from shared.models.base import Classifier
from shared.testing.backbones import check_backbone

REPO_ROOT = Path(__file__).resolve().parents[3]


def batch_for(model: Classifier, params: ModelParams) -> Any:
    if model.modality == "image":
        return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    tokenizer = load_tokenizer(params)
    return dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))


def backbones_in_use() -> list[tuple[str, ModelParams]]:
    """Every (modality, model params) of params.yaml's sections, random init at a small input size."""
    seen: dict[tuple[str, str], ModelParams] = {}
    params = load_params(REPO_ROOT / "params.yaml")
    for section in params.sections.values():
        modality = "image" if section.model.image_size else "text"
        update = {"pretrained": modality == "text", "image_size": 32 if modality == "image" else None}
        seen.setdefault((modality, section.model.backbone), section.model.model_copy(update=update))
    return [(m, p) for (m, _), p in sorted(seen.items())]


@pytest.mark.parametrize(("modality", "params"), backbones_in_use(), ids=lambda v: getattr(v, "backbone", v))
def test_backbones_in_use_meet_the_contract(modality: str, params: ModelParams) -> None:
    torch.manual_seed(0)
    model = build_model(params, modality, 3, pretrained=params.pretrained)
    check_backbone(model, batch_for(model, params), 3)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_tiny_backbones_meet_the_contract(modality: str, tiny_image_params: ModelParams,
                                          tiny_bert_params: ModelParams) -> None:
    params = tiny_image_params if modality == "image" else tiny_bert_params
    model = build_model(params, modality, 2, pretrained=params.pretrained)
    check_backbone(model, batch_for(model, params), 2)


def test_check_backbone_names_the_fault(tiny_image_params: ModelParams) -> None:
    model = build_model(tiny_image_params, "image", 2, pretrained=False)
    inputs = batch_for(model, tiny_image_params)
    with pytest.raises(AssertionError, match="is not a shared.models.base.Classifier"):
        check_backbone(nn.Linear(2, 2), inputs, 2)
    with pytest.raises(AssertionError, match="head has 2 outputs, expected 5"):
        check_backbone(model, inputs, 5)
    model.blocks = lambda: []  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="blocks\\(\\) must be non-empty"):
        check_backbone(model, inputs, 2)
