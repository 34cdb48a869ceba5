"""Conformance check for backbones: what every regime relies on, verified on a real model instance."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shared.models.base import Classifier


def _fail(model: nn.Module, message: str) -> None:
    raise AssertionError(f"backbone {type(model).__name__}: {message}")


def check_backbone(model: nn.Module, inputs: Any, num_classes: int) -> None:
    """Check ``model`` against :class:`shared.models.base.Classifier` on one batch ``inputs``.

    Raises:
        AssertionError: naming what is wrong.
    """
    if not isinstance(model, Classifier):
        raise AssertionError(f"{type(model).__name__} is not a shared.models.base.Classifier")
    if model.modality not in ("image", "text"):
        _fail(model, f"modality {model.modality!r} must be 'image' or 'text'")
    names = {n for n, _ in model.named_parameters()}
    modules = dict(model.named_modules())
    if not isinstance(model.head, nn.Linear) or modules.get(model.head_name) is not model.head:
        _fail(model, f"head_name {model.head_name!r} must name the Linear head")
    if model.head.out_features != num_classes:
        _fail(model, f"head has {model.head.out_features} outputs, expected {num_classes}")
    head = model.head_parameter_names()
    head_own = {f"{model.head_name}.{n}" for n, _ in model.head.named_parameters()}
    if not head_own <= head <= names:
        _fail(model, "head_parameter_names() must hold the head's parameters and only real parameter names")
    blocks = model.blocks()
    flat = [n for block in blocks for n in block]
    if not blocks or len(flat) != len(set(flat)) or set(flat) & head or not set(flat) <= names:
        _fail(model, "blocks() must be non-empty, disjoint parameter-name groups outside the head")
    if set(flat) | head != names:
        _fail(model, f"blocks() and the head leave {len(names - set(flat) - head)} parameters ungrouped")
    targets = model.lora_targets()  # PEFT matches a target by the full name or a trailing ".<name>"

    def matches(target: str) -> list[str]:
        return [n for n in modules if n == target or n.endswith(f".{target}")]

    if not targets or not all(matches(t) for t in targets) or any(model.head_name in matches(t) for t in targets):
        _fail(model, "lora_targets() must name existing modules (full names or name suffixes), not the head")
    model.eval()
    with torch.no_grad():
        logits, features = model(inputs), model.features(inputs)
    batch = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    if tuple(logits.shape) != (batch, num_classes):
        _fail(model, f"forward gives {tuple(logits.shape)}, expected {(batch, num_classes)}")
    if tuple(features.shape) != (batch, model.num_features):
        _fail(model, f"features gives {tuple(features.shape)}, expected {(batch, model.num_features)}")
