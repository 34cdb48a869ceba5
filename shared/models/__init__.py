"""Backbones behind one small interface.

Every model built here is an ``nn.Module`` with:
``forward(inputs) -> logits`` (a tuple ``(logits, *aux)`` in training mode for models with auxiliary
heads), ``features(inputs) -> (B, F)`` pooled pre-logit features, ``head`` (the Linear classifier),
``head_name`` (its module path, for PEFT ``modules_to_save``), ``head_parameter_names()`` (the head
and what trains with it, e.g. auxiliary heads), ``blocks()`` (backbone parameter names
grouped input side first, for partial fine-tuning) and ``lora_targets()``.
Images enter as uint8 tensors (B, 3, H, W); text as a tokenizer batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import ModelParams
from shared.models.base import Classifier
from shared.models.text import TextClassifier, load_tokenizer
from shared.models.weights import WeightsUnavailableError

if TYPE_CHECKING:
    from shared.models.image import ImageClassifier

__all__ = ["AUX_LOSS_WEIGHTS", "FEATURE_SEED", "Classifier", "ImageClassifier", "TextClassifier",
           "WeightsUnavailableError", "aux_loss_weight", "build_model", "feature_backbone", "load_tokenizer",
           "source_classes"]

# Default weight of each auxiliary head's loss: GoogLeNet's paper (0.3) and torchvision's Inception v3 (0.4).
AUX_LOSS_WEIGHTS: dict[str, float] = {"googlenet": 0.3, "inception_v3": 0.4}


def aux_loss_weight(backbone: str, configured: float | None) -> float | None:
    """The auxiliary-loss weight to train with: ``train.aux_loss_weight`` if set (0 turns the auxiliary
    heads off), else the backbone's default, else None (no auxiliary heads)."""
    weight = configured if configured is not None else AUX_LOSS_WEIGHTS.get(backbone)
    return weight or None


def build_model(params: ModelParams, modality: str, num_classes: int, *, pretrained: bool,
                aux_logits: bool = False) -> Classifier:
    """Create the classifier for ``modality`` (``pretrained`` and ``params.pretrained`` must both hold)."""
    use_pretrained = pretrained and params.pretrained
    if modality == "image":
        from shared.models.image import ImageClassifier

        _register_project_models()
        kwargs = {"aux_logits": True} if aux_logits else {}
        return ImageClassifier(params, num_classes, use_pretrained, **kwargs)
    if modality == "text":
        return TextClassifier(params, num_classes, use_pretrained)
    raise ValueError(f"unknown modality '{modality}'; expected 'image' or 'text'")


FEATURE_SEED = 0  # the initialisation of a random-init backbone whose frozen features are cached


def feature_backbone(params: ModelParams, modality: str, num_classes: int) -> Classifier:
    """The frozen backbone ``extract`` caches features of: the pretrained weights, or (``model.pretrained:
    false``) the initialisation drawn from :data:`FEATURE_SEED`, so the same network can be rebuilt later
    (the frozen regime's served model); the global random state is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FEATURE_SEED)
        return build_model(params, modality, num_classes, pretrained=True)


def source_classes(params: ModelParams, modality: str) -> int | None:
    """The number of classes of a pretrained image backbone's own (source) head, e.g. ImageNet's 1000, which
    :func:`feature_backbone` keeps when built with that many classes; None for text encoders (no source
    classifier), random-init candidates and timm models without a pretrained classifier."""
    if modality != "image" or not params.pretrained:
        return None
    import timm

    _register_project_models()
    cfg = timm.models.get_pretrained_cfg(params.backbone)
    classes = getattr(cfg, "num_classes", None) if cfg is not None else None
    return int(classes) if classes else None


def _register_project_models() -> None:
    """Import the project's own timm models (GoogLeNet) so timm's registry knows them."""
    try:
        import shared.models.googlenet  # noqa: F401
    except ImportError:
        pass


def __getattr__(name: str) -> Any:
    """``ImageClassifier`` on first use: timm (and the torchvision it imports, 1.8 s) loads only in processes
    that build or check an image model, not in every text stage."""
    if name == "ImageClassifier":
        from shared.models.image import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
