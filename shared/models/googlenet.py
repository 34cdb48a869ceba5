"""GoogLeNet / Inception v1 (Szegedy et al. 2014) as a timm model, torchvision's BatchNorm variant.

Importing this module registers ``googlenet`` in timm's registry, so
``timm.create_model("googlenet", num_classes=N, aux_logits=True)`` works like any timm backbone.

Layout (the names are what ``group_matcher`` and ``feature_info`` refer to)::

    input_transform           Identity, or torchvision's ``transform_input`` (see below)
    stem                      conv1 7x7/2, pool1, conv2 1x1, conv3 3x3          -> 192 ch, stride 4
    inception3 = pool, a, b                                                     -> 480 ch, stride 8
    inception4 = pool, a, b, c, d, e   (aux1 taps 4a, aux2 taps 4d)             -> 832 ch, stride 16
    inception5 = pool, a, b                                                     -> 1024 ch, stride 32
    aux1, aux2                auxiliary classifiers (only with ``aux_logits=True``)
    global_pool, head_drop, fc

Like torchvision (and unlike the paper) the "5x5" branch uses a 3x3 kernel, so torchvision's ImageNet
weights load one-to-one; ``branch5x5_kernel=5`` builds the paper's kernel instead (no pretrained weights).

``transform_input``: torchvision's ImageNet weights were ported from a model fed with ``(x - 0.5) / 0.5``.
torchvision keeps the usual ImageNet normalisation in its transforms and re-maps the normalised input
inside the model (``transform_input=True``, set by default whenever weights are requested). We do the
same: the pretrained config keeps ImageNet mean/std, and ``create_model("googlenet", pretrained=True)``
defaults to ``transform_input=True``, so outputs equal torchvision's for the same normalised batch. The
re-mapping is a parameter-free module (not folded into ``conv1``: zero padding would make a fold inexact).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ConvNormAct, create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from shared.models.convert import (
    TORCHVISION_URL,
    convert_torchvision_googlenet,
    fit_aux_heads,
    is_torchvision_googlenet,
    load_torchvision_googlenet,
)

__all__ = [
    "GoogLeNet",
    "Inception",
    "InceptionAux",
    "TORCHVISION_URL",
    "checkpoint_filter_fn",
    "convert_torchvision_googlenet",
    "googlenet",
    "load_torchvision_googlenet",
]

NUM_FEATURES = 1024
BN_EPS = 1e-3  # torchvision's BasicConv2d
# Inception module widths from the paper's Table 1:
# in_chs, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
INCEPTION_CFG: dict[str, dict[str, tuple[int, ...]]] = {
    "inception3": {"a": (192, 64, 96, 128, 16, 32, 32), "b": (256, 128, 128, 192, 32, 96, 64)},
    "inception4": {
        "a": (480, 192, 96, 208, 16, 48, 64),
        "b": (512, 160, 112, 224, 24, 64, 64),
        "c": (512, 128, 128, 256, 24, 64, 64),
        "d": (512, 112, 144, 288, 32, 64, 64),
        "e": (528, 256, 160, 320, 32, 128, 128),
    },
    "inception5": {"a": (832, 256, 160, 320, 32, 128, 128), "b": (832, 384, 192, 384, 48, 128, 128)},
}
# (stage, block after which the head taps, in_chs)
AUX_TAPS: dict[str, tuple[str, str, int]] = {
    "aux1": ("inception4", "a", 512),
    "aux2": ("inception4", "d", 528),
}
_HEAD_AT = {(stage, block): head for head, (stage, block, _) in AUX_TAPS.items()}
# torchvision normalises with ImageNet statistics; its ported weights expect (x - 0.5) / 0.5.
_TV_PORT_MEAN = (0.5, 0.5, 0.5)
_TV_PORT_STD = (0.5, 0.5, 0.5)


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU, torchvision's ``BasicConv2d``."""
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                       norm_kwargs=dict(eps=BN_EPS))


def _pool(kernel_size: int = 3, stride: int = 2, padding: int = 0) -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size, stride=stride, padding=padding, ceil_mode=True)


class InputTransform(nn.Module):
    """Maps an ImageNet-normalised batch to ``(x - 0.5) / 0.5`` (torchvision's ``transform_input``)."""

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
        port_mean, port_std = torch.tensor(_TV_PORT_MEAN), torch.tensor(_TV_PORT_STD)
        self.register_buffer("scale", (std / port_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - port_mean) / port_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-channel affine re-mapping."""
        return x * self.scale + self.shift  # type: ignore[operator]  # registered buffers


class Inception(nn.Module):
    """One Inception module: four parallel branches concatenated along channels.

    Args:
        in_chs: Input channels.
        ch1x1: Width of the 1x1 branch.
        ch3x3red: 1x1 reduction before the 3x3 conv.
        ch3x3: Width of the 3x3 branch.
        ch5x5red: 1x1 reduction before the "5x5" conv.
        ch5x5: Width of the "5x5" branch.
        pool_proj: 1x1 projection after the 3x3 max pool.
        branch5x5_kernel: Kernel of the "5x5" branch (3 in torchvision, 5 in the paper).
    """

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, branch5x5_kernel: int = 3) -> None:
        super().__init__()
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1x1 = _conv(in_chs, ch1x1, 1)
        self.branch3x3 = nn.Sequential(OrderedDict(reduce=_conv(in_chs, ch3x3red, 1),
                                                   conv=_conv(ch3x3red, ch3x3, 3)))
        self.branch5x5 = nn.Sequential(OrderedDict(reduce=_conv(in_chs, ch5x5red, 1),
                                                   conv=_conv(ch5x5red, ch5x5, branch5x5_kernel)))
        self.branch_pool = nn.Sequential(OrderedDict(pool=_pool(3, 1, padding=1),
                                                     proj=_conv(in_chs, pool_proj, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the four branch outputs."""
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, FC to classes."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = _conv(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Auxiliary logits (or the 1024-d pre-logits when ``num_classes == 0``)."""
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


def _stage(name: str, branch5x5_kernel: int) -> nn.Sequential:
    pool = _pool(2, 2) if name == "inception5" else _pool()
    blocks = [(block, Inception(*cfg[:7], branch5x5_kernel=branch5x5_kernel))  # type: ignore[misc]
              for block, cfg in INCEPTION_CFG[name].items()]
    return nn.Sequential(OrderedDict([("pool", pool), *blocks]))


class GoogLeNet(nn.Module):
    """Inception v1 with BatchNorm, following timm's model contract.

    ``forward`` returns ``(logits, aux1, aux2)`` in training mode when ``aux_logits`` is set, and the
    logits alone otherwise (eval mode, or no auxiliary heads).

    Args:
        num_classes: Classes of the main and auxiliary heads (0: no classifier, pooled features out).
        in_chans: Input channels.
        aux_logits: Build the two auxiliary classifiers (after inception4a and inception4d).
        transform_input: Re-map ImageNet-normalised input as torchvision's ported weights expect.
        drop_rate: Dropout before ``fc`` (torchvision: 0.2).
        aux_drop_rate: Dropout inside the auxiliary heads (torchvision: 0.7).
        global_pool: timm global pool type.
        branch5x5_kernel: Kernel of the "5x5" branches (3 = torchvision / pretrained, 5 = paper).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 transform_input: bool = False, drop_rate: float = 0.2, aux_drop_rate: float = 0.7,
                 global_pool: str = "avg", branch5x5_kernel: int = 3) -> None:
        super().__init__()
        if transform_input and in_chans != 3:
            raise ValueError("transform_input needs 3 input channels")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.aux_logits = aux_logits
        self.drop_rate = drop_rate
        self.aux_drop_rate = aux_drop_rate
        self.num_features = self.head_hidden_size = NUM_FEATURES
        self.grad_checkpointing = False

        self.input_transform = InputTransform() if transform_input else nn.Identity()
        self.stem = nn.Sequential(OrderedDict(conv1=_conv(in_chans, 64, 7, stride=2), pool1=_pool(),
                                              conv2=_conv(64, 64, 1), conv3=_conv(64, 192, 3)))
        self.inception3 = _stage("inception3", branch5x5_kernel)
        self.inception4 = _stage("inception4", branch5x5_kernel)
        self.inception5 = _stage("inception5", branch5x5_kernel)
        # registered after the stages so timm's FeatureListNet (which runs children in order) skips them
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        self._make_aux_heads()
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="stem.conv1"),
            dict(num_chs=192, reduction=4, module="stem.conv3"),
            dict(num_chs=480, reduction=8, module="inception3.b"),
            dict(num_chs=832, reduction=16, module="inception4.e"),
            dict(num_chs=1024, reduction=32, module="inception5.b"),
        ]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.apply(_init_weights)

    def _make_aux_heads(self) -> None:
        if not self.aux_logits:
            return
        for name, (_, _, in_chs) in AUX_TAPS.items():
            setattr(self, name, InceptionAux(in_chs, self.num_classes, self.aux_drop_rate))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's ``group_parameters``: stem, then one per stage (coarse) or block.

        The classifier and the auxiliary heads match nothing, so timm puts them in a last (head) group.
        """
        if coarse:
            return dict(stem=r"^stem\.", blocks=r"^inception(\d+)\.")
        blocks = [(rf"^{stage}\.{block}\.", (int(stage[-1]), i))
                  for stage, cfg in INCEPTION_CFG.items() for i, block in enumerate(cfg)]
        return dict(stem=r"^stem\.", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each Inception block in the backward pass to save activation memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The main classifier (``fc``)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace ``fc`` (and rebuild the auxiliary heads, freshly initialised) for ``num_classes``."""
        ref: torch.Tensor = self.stem.conv1.conv.weight  # type: ignore[union-attr,assignment]
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self._make_aux_heads()
        for module in (self.fc, self.aux1, self.aux2):
            if module is not None:
                module.apply(_init_weights)
                module.to(device=ref.device, dtype=ref.dtype).train(self.training)

    def _forward_features(self, x: torch.Tensor, aux: list[torch.Tensor] | None) -> torch.Tensor:
        """Run the trunk; when ``aux`` is a list, append the auxiliary heads' outputs to it in order."""
        x = self.stem(self.input_transform(x))
        for stage_name in INCEPTION_CFG:
            for block_name, block in getattr(self, stage_name).named_children():
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
                if aux is not None and (stage_name, block_name) in _HEAD_AT:
                    aux.append(getattr(self, _HEAD_AT[stage_name, block_name])(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled ``(N, 1024, H/32, W/32)`` features of the last stage."""
        return self._forward_features(x, None)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout and (unless ``pre_logits``) the classifier."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits; ``(logits, aux1, aux2)`` in training mode with auxiliary heads."""
        aux: list[torch.Tensor] | None = [] if self.training and self.aux_logits else None
        logits = self.forward_head(self._forward_features(x, aux))
        return (logits, *aux) if aux is not None else logits


def _init_weights(module: nn.Module) -> None:
    """torchvision's GoogLeNet init: truncated normal (std 0.01) for conv/linear, BN at identity."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: torchvision keys to ours, then matched to ``model``'s auxiliary heads.

    A state dict already in this module's layout passes through unchanged. Auxiliary-head tensors are
    dropped when the model has no such head or a different class count: torchvision's auxiliary heads
    are not ImageNet-trained, so nothing of value is lost.
    """
    if is_torchvision_googlenet(state_dict):
        state_dict = convert_torchvision_googlenet(state_dict)
    return fit_aux_heads(state_dict, model, drop_mismatched=True)


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv", "classifier": "fc", **kwargs,
    }


# must exist before @register_model runs: timm reads the module's ``default_cfgs`` at registration
default_cfgs = generate_default_cfgs({
    "googlenet.tv_in1k": _cfg(url=TORCHVISION_URL, license="bsd-3-clause", paper_ids="arXiv:1409.4842",
                              origin_url="https://github.com/pytorch/vision"),
})


def _create_googlenet(variant: str, pretrained: bool = False, **kwargs: Any) -> GoogLeNet:
    # torchvision's weights expect its input re-mapping (see the module docstring)
    kwargs.setdefault("transform_input", pretrained)
    return build_model_with_cfg(
        GoogLeNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )


@register_model
def googlenet(pretrained: bool = False, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet / Inception v1 with BatchNorm (torchvision's variant); ``aux_logits=True`` adds aux heads."""
    return _create_googlenet("googlenet", pretrained=pretrained, **kwargs)
