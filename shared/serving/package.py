"""The servable model package: one self-contained folder per (domain, regime) that turns raw inputs into
class probabilities with exactly the evaluation preprocessing.

``train@DOMAIN-REGIME`` writes it to ``models/<domain>/<regime>/package/``:

- ``card.json`` (:class:`ModelCard`): domain, regime, modality, task, class names, the backbone's
  ``model`` params (image size, ``max_length``), the precision the test probabilities were computed in;
- network regimes (every trained one, and ``frozen`` as backbone + probe head): ``model.safetensors``, the
  complete classifier's state (LoRA / DoRA merged into the base weights with PEFT's ``merge_and_unload``),
  and for text ``encoder/`` with the encoder's config and its tokenizer, so loading needs no network;
- ``baseline``: ``baseline.skops``, the scikit-learn objects in skops' format (no pickle).

Nothing here unpickles: weights are safetensors, the card JSON, the baseline skops with an explicit list of
trusted types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch

from shared.files.atomic import write_json, write_safetensors

if TYPE_CHECKING:
    from shared.models.base import Classifier

CARD = "card.json"
WEIGHTS = "model.safetensors"
ENCODER = "encoder"
BASELINE = "baseline.skops"
FORMAT = "transferlab-model/1"
BATCH_SIZE = 32
T = TypeVar("T")
Input = str | Path | bytes  # an image's bytes or path, or a text


@dataclass
class ModelCard:
    """What a package holds and how to feed it.

    Attributes:
        domain, regime: where it was trained.
        modality: ``image`` or ``text``; the input column is named the same way (``image`` / ``text``).
        task: ``binary`` or ``multiclass``.
        class_names: one probability column per class, in label-id order.
        kind: ``network`` (a :class:`~shared.models.base.Classifier`) or ``baseline`` (scikit-learn).
        model: the domain's ``model`` params (backbone, ``image_size``, ``max_length``).
        precision: ``fp32`` or ``bf16`` (CPU autocast), as the evaluation probabilities were computed.
        aux_logits: the network carries auxiliary heads (GoogLeNet, Inception v3; eval ignores them).
        baseline: the baseline's settings (``pixel_size`` and ``grey`` for images).
    """

    domain: str
    regime: str
    modality: Literal["image", "text"]
    task: str
    class_names: list[str]
    kind: Literal["network", "baseline"]
    model: dict[str, Any]
    precision: str = "fp32"
    aux_logits: bool = False
    baseline: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def input_column(self) -> str:
        """The name of the input column: the prepared datasets' own (``image`` or ``text``)."""
        return self.modality

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """The card of the package in ``folder``."""
        path = folder / CARD
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a transferlab model package: {CARD} missing")
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"{path}: format {raw.get('format')!r}; this transferlab reads {FORMAT!r}")
        return cls(**raw)


def folder_bytes(folder: Path) -> int:
    """The size of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- writing ------------------------------------------------------------------------------------


def inference_model(network: torch.nn.Module) -> torch.nn.Module:
    """The plain classifier to serve: a PEFT wrapper merged into its base (``merge_and_unload``)."""
    merge = getattr(network, "merge_and_unload", None)
    return merge() if callable(merge) else network


def save_network(network: torch.nn.Module, folder: Path, card: ModelCard, tokenizer: Any = None) -> None:
    """Write a network package: the complete (merged) state as safetensors, the card, and for text the
    encoder config and tokenizer."""
    model = inference_model(network)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    write_safetensors(folder / WEIGHTS, state, metadata={"contents": "complete classifier state"})
    if card.modality == "text":
        encoder = getattr(model, "encoder", None)
        if encoder is None or tokenizer is None:
            raise ValueError("a text package needs the model's encoder and its tokenizer")
        encoder.config.save_pretrained(folder / ENCODER)
        tokenizer.save_pretrained(folder / ENCODER)
    write_json(folder / CARD, asdict(card))


def save_baseline(objects: dict[str, Any], folder: Path, card: ModelCard) -> None:
    """Write a baseline package: its scikit-learn objects in skops' format and the card."""
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(objects, folder / BASELINE)
    write_json(folder / CARD, asdict(card))


# --- reading ------------------------------------------------------------------------------------


class InputError(ValueError):
    """An input that cannot be scored (an undecodable image, a missing text); names the item."""


def _decoded(items: Sequence[Input], decode: Callable[[Input, str | None], T], offset: int = 0) -> list[T]:
    """``decode(item, name)`` of every image item; an undecodable or unreadable one raises
    :class:`InputError` naming its position (``offset`` + index)."""
    from shared.data.images import BadImageError

    out = []
    for i, item in enumerate(items):
        try:
            out.append(decode(item, None if isinstance(item, bytes) else str(item)))
        except (BadImageError, OSError) as err:
            raise InputError(f"item {offset + i}: {err}") from None
    return out


def _texts(items: Sequence[Any], offset: int) -> list[str]:
    bad = [offset + i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise InputError(f"items {bad[:10]} are not strings (a text model reads one string per item)")
    return list(items)


class Scorer:
    """A loaded package: :meth:`predict_proba` maps raw inputs to class probabilities (N, classes)."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    def predict_proba(self, items: Sequence[Input]) -> np.ndarray:
        """Probabilities, one row per item, one column per class of the card."""
        raise NotImplementedError


class NetworkScorer(Scorer):
    """A classifier rebuilt from its card (no pretrained download) with its complete state."""

    def __init__(self, card: ModelCard, folder: Path, batch_size: int = BATCH_SIZE) -> None:
        super().__init__(card)
        from safetensors.torch import load_file

        from shared.config import ModelParams
        from shared.models import build_model, load_tokenizer

        settings = dict(card.model)
        if card.modality == "text":
            settings["weights_file"] = str(folder / ENCODER)
        params = ModelParams(**settings)
        self.model: Classifier = build_model(params, card.modality, len(card.class_names), pretrained=False,
                                             aux_logits=card.aux_logits)
        self.model.load_state_dict(load_file(folder / WEIGHTS), strict=True)
        self.model.eval()
        from shared.training.precision import use_channels_last

        # the layout the test probabilities were computed in: channels-last for an image model's bf16 passes
        self.channels_last = use_channels_last(None, self.model, torch.device("cpu"), card.precision,  # type: ignore[arg-type]
                                               forward_only=True)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.image_size = int(getattr(self.model, "image_size", 0))  # an image model's input size; 0 for text
        self.tokenizer = load_tokenizer(params) if card.modality == "text" else None
        self.max_length = params.max_length
        self.batch_size = batch_size

    def prepare(self, items: Sequence[Input], offset: int = 0) -> Any:
        """The network's input for ``items``, exactly as :meth:`predict_proba` feeds it: uint8 images
        (B, 3, S, S), or the tokenizer's ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) padded to
        the longest item (at most ``max_length``). ``offset`` is the first item's index in error messages."""
        if self.card.modality == "image":
            from shared.data.loaders import image_tensor

            size = self.image_size
            return torch.stack(_decoded(items, lambda item, name: image_tensor(item, size, name=name), offset))
        assert self.tokenizer is not None
        encoded = self.tokenizer(_texts(items, offset), truncation=True, max_length=self.max_length, padding=True,
                                 return_tensors="pt")
        return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def predict_proba(self, items: Sequence[Input]) -> np.ndarray:
        """Softmax of the logits, batch by batch, in the card's precision."""
        out = []
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if self.card.precision == "bf16"
                    else nullcontext())
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                inputs = self.prepare(items[start:start + self.batch_size], start)
                if self.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with autocast:
                    logits = self.model(inputs)
                out.append(logits.float().softmax(-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.card.class_names)))


SKOPS_TRUSTED = ["sklearn.feature_extraction.text.TfidfVectorizer", "sklearn.linear_model._logistic.LogisticRegression",
                 "sklearn.feature_extraction.text.TfidfTransformer", "sklearn.pipeline.Pipeline",
                 "numpy.float64", "numpy.int64", "numpy.dtype", "numpy.ndarray", "builtins.dict", "builtins.str",
                 "builtins.tuple", "builtins.list", "builtins.float", "builtins.int"]


class BaselineScorer(Scorer):
    """The classical baseline: TF-IDF + logistic regression, or raw pixels + logistic regression."""

    def __init__(self, card: ModelCard, folder: Path) -> None:
        super().__init__(card)
        import skops.io as sio

        path = folder / BASELINE
        unknown = [t for t in sio.get_untrusted_types(file=path) if t not in SKOPS_TRUSTED]
        if unknown:
            raise ValueError(f"{path} holds types this loader does not trust: {unknown}")
        self.objects: dict[str, Any] = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    def predict_proba(self, items: Sequence[Input]) -> np.ndarray:
        """The fitted classifier's probabilities on the baseline's features."""
        from shared.regimes.probe import full_probs

        if self.card.modality == "text":
            x = self.objects["vectorizer"].transform(_texts(items, 0))
        else:
            from shared.data.images import decode_image
            from shared.regimes.baseline import pixel_features

            images = _decoded(items, lambda item, name: decode_image(item, name=name))
            x, _ = pixel_features(images, int(self.card.baseline["pixel_size"]), bool(self.card.baseline["grey"]))
        return full_probs(self.objects["classifier"], x, len(self.card.class_names))


def load_package(folder: Path) -> Scorer:
    """The scorer of the package in ``folder``."""
    card = ModelCard.read(folder)
    return NetworkScorer(card, folder) if card.kind == "network" else BaselineScorer(card, folder)


def raw_inputs(split: Any) -> list[Input]:
    """A prepared split's inputs as a served model reads them: the images' encoded bytes, or the texts."""
    if "text" in split.column_names:
        return list(split["text"])
    from datasets import Image as DatasetImage

    images = split.cast_column("image", DatasetImage(decode=False))["image"]
    return [item["bytes"] if item.get("bytes") else Path(item["path"]).read_bytes() for item in images]


def labels_at(probs: np.ndarray, class_names: Sequence[str], threshold: float | None) -> list[str]:
    """Predicted class names: binary at ``threshold`` on the positive class's probability (``None``: argmax),
    otherwise argmax."""
    if len(class_names) == 2 and threshold is not None:
        ids = (probs[:, 1] >= threshold).astype(int)
    else:
        ids = probs.argmax(1)
    return [class_names[i] for i in ids]


def probability_columns(class_names: Sequence[str]) -> list[str]:
    """The output's probability column names, one per class: ``prob_<class>``."""
    return [f"prob_{name}" for name in class_names]
