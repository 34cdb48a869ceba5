"""What each transfer regime freezes, unfreezes, adapts (PEFT) and at which learning rates.

The only module that imports PEFT config classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.config import DomainParams, LoraAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegimeSpec:
    """Static facts about a regime."""

    name: str
    pretrained: bool  # starts from pretrained weights
    trains_network: bool  # runs the gradient training loop (frozen/baseline fit scikit-learn models)
    description: str


REGIME_SPECS: dict[str, RegimeSpec] = {
    spec.name: spec
    for spec in (
        RegimeSpec("scratch", False, True, "every weight trains from random init"),
        RegimeSpec("frozen", True, False, "logistic regression on cached frozen features"),
        RegimeSpec("partial", True, True, "last k backbone blocks + head, discriminative learning rates"),
        RegimeSpec("full", True, True, "every weight trains, discriminative learning rates"),
        RegimeSpec("lora", True, True, "LoRA adapters + head (PEFT modules_to_save)"),
        RegimeSpec("lp_ft", True, True, "head from the frozen probe, then full fine-tuning"),
        RegimeSpec("baseline", False, False, "TF-IDF / raw pixels + logistic regression"),
    )
}


def get_regime(name: str) -> RegimeSpec:
    """The spec of regime ``name``; an unknown name lists the valid ones."""
    if name not in REGIME_SPECS:
        raise KeyError(f"unknown regime '{name}'; valid regimes: {list(REGIME_SPECS)}")
    return REGIME_SPECS[name]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _freeze_batchnorm_stats(model: nn.Module, *, all_layers: bool = False) -> None:
    """Mark BatchNorm layers whose affine parameters are frozen (or every one, ``all_layers``) so that
    training keeps them in eval mode, with their running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            module.frozen_stats = all_layers or (bool(params) and not any(p.requires_grad for p in params))


def _zero_head(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers of frozen blocks, which keep their running statistics."""
    model.train()
    for module in model.modules():
        if getattr(module, "frozen_stats", False):
            module.eval()


def init_head_from_probe(head: nn.Linear, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Copy a logistic-regression probe (in raw feature space) into the Linear head.

    A binary probe has one row ``w``: the head gets rows ``[0, w]`` so softmax equals the probe's sigmoid.
    """
    coef = np.atleast_2d(coef)
    intercept = np.atleast_1d(intercept)
    if coef.shape[0] == 1 and head.out_features == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    if coef.shape != tuple(head.weight.shape):
        raise ValueError(f"probe weights {coef.shape} do not fit head {tuple(head.weight.shape)}")
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))


def _discriminative_groups(model: nn.Module, lr: float, factor: float, weight_decay: float) -> list[dict]:
    head_names = model.head_parameter_names()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n in head_names]
    body = [p for n, p in named if n not in head_names]
    groups = [{"params": head, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    if body:
        groups.append({"params": body, "lr": lr * factor, "weight_decay": weight_decay, "name": "backbone"})
    return groups


def apply_lora(model: nn.Module, adapter: LoraAdapter) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters; the head trains fully through ``modules_to_save``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules or model.lora_targets(),
        modules_to_save=[model.head_name],
    )
    return get_peft_model(model, config)


def setup_regime(model: nn.Module, regime: str, params: DomainParams) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Freeze / unfreeze / adapt ``model`` for ``regime``; return the model to train and optimizer groups."""
    train = params.train_for(regime)
    if regime != "lp_ft" and train.head_init == "zeros":  # lp_ft's head comes from the probe
        _zero_head(model)
    if regime in ("scratch", "full", "lp_ft"):
        model.requires_grad_(True)
        factor = 1.0 if regime == "scratch" else train.backbone_lr_factor
    elif regime == "partial":
        blocks = model.blocks()
        k = params.regimes.partial.blocks
        if k > len(blocks):
            raise ValueError(f"regimes.partial.blocks={k} but the backbone has only {len(blocks)} blocks")
        model.requires_grad_(False)
        unfrozen = {name for block in blocks[-k:] for name in block} | model.head_parameter_names()
        for name, p in model.named_parameters():
            p.requires_grad_(name in unfrozen)
        factor = train.backbone_lr_factor
    elif regime == "lora":
        model = apply_lora(model, params.regimes.lora.adapter)
        _freeze_batchnorm_stats(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return model, [{"params": trainable, "lr": train.lr, "weight_decay": train.weight_decay, "name": "lora"}]
    else:
        raise ValueError(f"regime '{regime}' does not train a network")
    _freeze_batchnorm_stats(model, all_layers=regime != "scratch" and train.batchnorm == "frozen")
    return model, _discriminative_groups(model, train.lr, factor, train.weight_decay)
