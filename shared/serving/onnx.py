"""ONNX export of a network package, checked against PyTorch with ONNX Runtime.

:func:`export_onnx` writes the package's classifier *with its softmax* as one self-contained ``.onnx`` file:

- image: input ``image``, uint8 (batch, 3, S, S), normalised inside the graph exactly as the classifier
  normalises it (the backbone's mean / std), so a client sends the decoded, resized pixels;
- text: inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the package's tokenizer
  returns them), int64 (batch, sequence);
- output ``probabilities``, float32 (batch, classes), the card's class order.

Batch (and, for text, sequence length) are dynamic axes. The exporter is torch.export's (``dynamo=True``,
ONNX functions from onnxscript): the TorchScript exporter (``dynamo=False``) also exports both modalities
on torch 2.14, but it is deprecated ("will be removed"), and on BERT it traces Python branches on tensor
values (transformers' attention-mask shortcuts) into constants, which is right only for inputs shaped like
the example; torch.export either keeps such a branch symbolic or refuses to export.

:func:`check_onnx` runs the file with ONNX Runtime (``CPUExecutionProvider``) on the inputs
:meth:`~shared.serving.package.NetworkScorer.prepare` builds, batch by batch as
:meth:`~shared.serving.package.NetworkScorer.predict_proba` batches them, and compares the probabilities.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.files.atomic import atomic_path
from shared.serving.package import Input, ModelCard, NetworkScorer

OUTPUT = "probabilities"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOLERANCE = 1e-4
PROVIDER = "CPUExecutionProvider"
EXAMPLE_TEXTS = ["a short example", "a longer example sentence, so that the batch has padding"]
PROTOBUF_LIMIT = 1_800_000_000  # bytes of weights above which they go to an external data file (2 GB limit)


class NotExportableError(ValueError):
    """A package that has no network to export (the scikit-learn baseline)."""


class OnnxMismatchError(ValueError):
    """ONNX Runtime's probabilities differ from PyTorch's by more than the tolerance."""


class _ImageProbabilities(nn.Module):
    """uint8 images -> softmax probabilities (the classifier normalises inside)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).softmax(-1)


class _TextProbabilities(nn.Module):
    """Tokenizer tensors -> softmax probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return self.model(batch).softmax(-1)


def network_scorer(package_dir: Path) -> NetworkScorer:
    """The package's scorer, in fp32 (the exported graph's precision); a baseline package raises
    :class:`NotExportableError` before anything is loaded."""
    card = ModelCard.read(Path(package_dir))
    if card.kind != "network":
        raise NotExportableError(f"{package_dir}: a {card.kind} package ({card.regime}, scikit-learn) has no "
                                 "network to export to ONNX; export a network regime (e.g. full, lora, frozen)")
    return NetworkScorer(replace(card, precision="fp32"), Path(package_dir))


def _example(scorer: NetworkScorer) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], tuple[Any, ...]]:
    """(wrapper, example args, input names, dynamic shapes) for torch.onnx.export."""
    batch = torch.export.Dim("batch")
    if scorer.card.modality == "image":
        size = scorer.image_size
        # two items: an example batch of 1 would specialise the batch axis to 1
        image = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return _ImageProbabilities(scorer.model), (image,), ["image"], ({0: batch},)
    encoded = scorer.prepare(EXAMPLE_TEXTS)
    names = [name for name in TEXT_INPUTS if name in encoded]
    sequence = torch.export.Dim("sequence")
    args = tuple(encoded[name] for name in names)
    return _TextProbabilities(scorer.model), args, names, tuple({0: batch, 1: sequence} for _ in names)


def export_onnx(package_dir: Path, dest: Path, opset: int | None = None) -> Path:
    """Export the network of the package in ``package_dir`` (softmax included) to ``dest``.

    Args:
        package_dir: a network package (``models/<domain>/<regime>/package``).
        dest: the ``.onnx`` file to write (atomically; its folder is created).
        opset: the ONNX opset (default: the exporter's).

    Returns:
        ``dest``.

    Raises:
        NotExportableError: the package is the scikit-learn baseline.
    """
    scorer = network_scorer(package_dir)
    wrapper, args, names, dynamic = _example(scorer)
    wrapper.eval()
    weights = sum(p.numel() * p.element_size() for p in wrapper.parameters())
    dest = Path(dest)

    def write(path: Path, external: bool) -> None:
        # the exporter reports each of its steps on stdout (keep a CLI's output to its own lines) and warns
        # that the inputs share the axis names they were given, which is the intent
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=[OUTPUT],
                              dynamic_shapes=dynamic, opset_version=opset, dynamo=True, external_data=external,
                              verbose=False)

    if weights > PROTOBUF_LIMIT:  # weights in <dest>.data beside it: written in place, not atomically
        dest.parent.mkdir(parents=True, exist_ok=True)
        write(dest, external=True)
    else:
        with atomic_path(dest) as tmp:
            write(tmp, external=False)
    return dest


def onnx_session(onnx_file: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU (``threads``: intra-op threads, default ONNX Runtime's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_file), sess_options=options, providers=[PROVIDER])


def session_feed(session: Any, inputs: Any) -> dict[str, np.ndarray]:
    """The session's inputs from a :meth:`~shared.serving.package.NetworkScorer.prepare` result."""
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, torch.Tensor):
        return {names[0]: inputs.numpy()}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"the ONNX graph reads {missing}, which the package's tokenizer does not return")
    return {name: inputs[name].numpy() for name in names}


def check_onnx(package_dir: Path, onnx_file: Path, raw_items: Sequence[Input], tolerance: float = TOLERANCE,
               threads: int | None = None) -> dict[str, Any]:
    """Score ``raw_items`` with ONNX Runtime and with the package's PyTorch scorer (fp32) and compare.

    Both see the same inputs: the scorer's own :meth:`~shared.serving.package.NetworkScorer.prepare`, in the
    scorer's batches (text is padded per batch, so the batches must match).

    Returns:
        ``max_abs_diff`` (of the probabilities), ``n_items``, ``tolerance``, ``provider``, ``batch_size``,
        ``inputs`` (the graph's input names) and ``package_precision`` (the card's; the graph and the
        reference are fp32).

    Raises:
        OnnxMismatchError: the largest difference is above ``tolerance`` (or either side is not finite).
        NotExportableError: the package is the scikit-learn baseline.
    """
    if not raw_items:
        raise ValueError("check_onnx needs at least one item")
    precision = ModelCard.read(Path(package_dir)).precision
    scorer = network_scorer(package_dir)
    session = onnx_session(onnx_file, threads)
    expected = scorer.predict_proba(raw_items)
    got = []
    for start in range(0, len(raw_items), scorer.batch_size):
        inputs = scorer.prepare(raw_items[start:start + scorer.batch_size], start)
        got.append(session.run([OUTPUT], session_feed(session, inputs))[0])
    probs = np.concatenate(got)
    if probs.shape != expected.shape:
        raise OnnxMismatchError(f"{onnx_file}: ONNX Runtime gave {probs.shape}, PyTorch {expected.shape}")
    diff = float(np.abs(probs.astype(np.float64) - expected).max())
    if not np.isfinite(diff) or diff > tolerance:
        raise OnnxMismatchError(f"{onnx_file}: probabilities differ from PyTorch's by up to {diff:.3g} on "
                                f"{len(raw_items)} items (tolerance {tolerance:g})")
    return {"max_abs_diff": diff, "n_items": len(raw_items), "tolerance": tolerance, "provider": PROVIDER,
            "batch_size": scorer.batch_size, "inputs": [i.name for i in session.get_inputs()],
            "package_precision": precision}
