"""Checkpoint converters: torchvision GoogLeNet -> :mod:`shared.models.googlenet`, and an ONNX export of a
BERT encoder -> a transformers ``BertModel`` state dict and config.

The GoogLeNet map is written out in full: every torchvision key has exactly one target, and a key outside
the map raises instead of being silently dropped. Checkpoints are read with
``torch.load(weights_only=True)``; remote ones are fetched through :func:`shared.data.sources.download` into
torch hub's checkpoint cache. The ONNX converter reads the architecture off the graph and accounts for
every initializer (one that maps nowhere raises).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
import torch.nn as nn

from shared.data.sources import SourceError, download, file_digest

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ONNX_BERT_ANCHOR",
    "TORCHVISION_KEY_MAP",
    "TORCHVISION_URL",
    "convert_torchvision_googlenet",
    "fit_aux_heads",
    "is_torchvision_googlenet",
    "load_torchvision_googlenet",
    "onnx_bert_state_dict",
    "read_checkpoint",
]

TORCHVISION_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"
URL_SCHEMES = ("http", "https", "file")
AUX_PREFIXES = ("aux1.", "aux2.")

# torchvision module -> ours, for every conv + BN (``BasicConv2d``) module
_STEM = {"conv1": "stem.conv1", "conv2": "stem.conv2", "conv3": "stem.conv3"}
_INCEPTION_MODULES = {
    "inception3a": "inception3.a", "inception3b": "inception3.b",
    "inception4a": "inception4.a", "inception4b": "inception4.b", "inception4c": "inception4.c",
    "inception4d": "inception4.d", "inception4e": "inception4.e",
    "inception5a": "inception5.a", "inception5b": "inception5.b",
}
_INCEPTION_BRANCHES = {  # torchvision's branch4.0 is the parameter-free max pool
    "branch1": "branch1x1",
    "branch2.0": "branch3x3.reduce", "branch2.1": "branch3x3.conv",
    "branch3.0": "branch5x5.reduce", "branch3.1": "branch5x5.conv",
    "branch4.1": "branch_pool.proj",
}
_AUX_CONVS = {"aux1.conv": "aux1.conv", "aux2.conv": "aux2.conv"}
_LINEARS = {"aux1.fc1": "aux1.fc1", "aux1.fc2": "aux1.fc2", "aux2.fc1": "aux2.fc1", "aux2.fc2": "aux2.fc2",
            "fc": "fc"}
_CONV_BN_TENSORS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                    "bn.num_batches_tracked")
_LINEAR_TENSORS = ("weight", "bias")


def _build_key_map() -> dict[str, str]:
    conv_modules = dict(_STEM, **_AUX_CONVS)
    for tv_module, module in _INCEPTION_MODULES.items():
        for tv_branch, branch in _INCEPTION_BRANCHES.items():
            conv_modules[f"{tv_module}.{tv_branch}"] = f"{module}.{branch}"
    key_map = {f"{tv}.{t}": f"{ours}.{t}" for tv, ours in conv_modules.items() for t in _CONV_BN_TENSORS}
    key_map.update({f"{tv}.{t}": f"{ours}.{t}" for tv, ours in _LINEARS.items() for t in _LINEAR_TENSORS})
    return key_map


TORCHVISION_KEY_MAP: dict[str, str] = _build_key_map()


def is_torchvision_googlenet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state_dict`` uses torchvision's GoogLeNet key names."""
    return "conv1.conv.weight" in state_dict


def convert_torchvision_googlenet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``GoogLeNet`` state dict to this project's ``googlenet`` layout.

    Raises:
        KeyError: a key has no mapping (nothing is dropped silently).
    """
    unmapped = sorted(k for k in state_dict if k not in TORCHVISION_KEY_MAP)
    if unmapped:
        raise KeyError(f"{len(unmapped)} torchvision GoogLeNet key(s) without a mapping: {unmapped[:10]}")
    return {TORCHVISION_KEY_MAP[k]: v for k, v in state_dict.items()}


def fit_aux_heads(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                  drop_mismatched: bool = False) -> dict[str, torch.Tensor]:
    """Drop auxiliary-head tensors the model has no place for (no aux heads, or, if asked, other shapes).

    torchvision does the same when it loads its ImageNet weights into a model without aux heads.
    """
    own = model.state_dict()

    def keep(key: str, value: torch.Tensor) -> bool:
        if not key.startswith(AUX_PREFIXES):
            return True
        if getattr(model, key.split(".")[0], None) is None:
            return False
        return not drop_mismatched or (key in own and own[key].shape == value.shape)

    return {k: v for k, v in state_dict.items() if keep(k, v)}


def _hash_prefix(url: str) -> str | None:
    """torch hub's convention: ``name-<first hex digits of sha256>.ext``."""
    match = re.search(r"-([0-9a-f]{8,64})\.[^/]+$", urlparse(url).path)
    return match.group(1) if match else None


def _cached_download(url: str, cache_dir: Path, sha256: str | None) -> Path:
    dest = cache_dir / Path(urlparse(url).path).name
    prefix = _hash_prefix(url)

    def valid(path: Path) -> bool:
        digest = file_digest(path, "sha256") if (sha256 or prefix) else ""
        return (not sha256 or digest == sha256) and (not prefix or digest.startswith(prefix))

    if dest.is_file() and valid(dest):
        return dest
    download(url, dest, sha256=sha256)
    if not valid(dest):
        dest.unlink()
        raise SourceError(f"{url}: sha256 does not start with the hash prefix {prefix} in its file name")
    return dest


def read_checkpoint(source: Mapping[str, torch.Tensor] | str | Path, cache_dir: Path | None = None,
                    sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a local file, or an http(s)/file URL (downloaded once, verified).

    Args:
        source: The state dict itself, a path, or a URL.
        cache_dir: Where downloads go (default: torch hub's ``checkpoints`` directory).
        sha256: Full checksum to verify a download against; a torch-hub hash prefix in the file name is
            always checked.
    """
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, str) and urlparse(source).scheme in URL_SCHEMES:
        source = _cached_download(source, cache_dir or Path(torch.hub.get_dir()) / "checkpoints", sha256)
    return dict(torch.load(source, map_location="cpu", weights_only=True))


def load_torchvision_googlenet(model: nn.Module, source: Mapping[str, torch.Tensor] | str | Path,
                               cache_dir: Path | None = None, sha256: str | None = None) -> nn.Module:
    """Load torchvision GoogLeNet weights into a ``googlenet`` model, strictly, and return the model.

    Auxiliary-head weights are skipped when the model has no auxiliary heads (as torchvision does).
    For torchvision's ImageNet weights build the model with ``transform_input=True`` (the default of
    ``timm.create_model("googlenet", pretrained=True)``) so that outputs match torchvision's.
    """
    state_dict = read_checkpoint(source, cache_dir=cache_dir, sha256=sha256)
    if is_torchvision_googlenet(state_dict):
        state_dict = convert_torchvision_googlenet(state_dict)
    model.load_state_dict(fit_aux_heads(state_dict, model), strict=True)
    return model


ONNX_BERT_ANCHOR = "embeddings.word_embeddings.weight"  # locates the exporter's prefix (e.g. "model.0.auto_model.")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def _constant_value(node: onnx.NodeProto) -> list[int]:
    from onnx import numpy_helper

    return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]


def _attention_heads(graph: onnx.GraphProto, query_bias: str, hidden: int) -> int:
    """Heads from the reshape of layer 0's query projection to (batch, seq, heads, head_dim)."""
    producers = {out: node for node in graph.node for out in node.output}
    query = next(node.output[0] for node in graph.node if node.op_type == "Add" and query_bias in node.input)
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[0] == query:
            shape = producers[node.input[1]]
            if shape.op_type == "Concat":
                dims = [producers[i] for i in shape.input[-2:]]
                if all(d.op_type == "Constant" for d in dims):
                    heads, head_dim = (_constant_value(d)[0] for d in dims)
                    if heads * head_dim == hidden:
                        return heads
    raise ValueError("cannot find the attention head count: no (batch, seq, heads, head_dim) reshape of "
                     f"the output of {query_bias}'s Add")


def onnx_bert_state_dict(model: onnx.ModelProto) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A transformers ``BertModel`` state dict (no pooler) and ``BertConfig`` keyword arguments read off a
    PyTorch ONNX export of a BERT encoder.

    Named initializers keep their names (less the exporter's prefix); the exporter's anonymous
    ``MatMul`` weights are named after the bias of the ``Add`` that follows them and transposed back to
    ``nn.Linear``'s (out, in) layout. Layers, hidden size, heads, intermediate size, vocabulary, maximum
    positions, LayerNorm epsilon and the activation come from the graph.

    Raises:
        ValueError: the graph is not a BERT encoder export, or an initializer maps nowhere.
    """
    from onnx import numpy_helper

    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    anchor = next((name for name in arrays if name.endswith(ONNX_BERT_ANCHOR)), None)
    if anchor is None:
        raise ValueError(f"not a BERT export: no initializer named *{ONNX_BERT_ANCHOR}")
    prefix = anchor[: -len(ONNX_BERT_ANCHOR)]
    state = {name[len(prefix):]: torch.from_numpy(a.copy()) for name, a in arrays.items() if name.startswith(prefix)}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else ""
        if weight not in arrays or weight.startswith(prefix):
            continue
        biases = [i for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for i in add.input if i.startswith(prefix) and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"MatMul weight {weight} is not followed by exactly one bias Add ({biases})")
        state[biases[0][len(prefix):-len("bias")] + "weight"] = torch.from_numpy(arrays[weight].T.copy())
    unmapped = sorted(set(arrays) - {n for n in arrays if n.startswith(prefix)}
                      - {n.input[1] for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2})
    if unmapped:
        raise ValueError(f"{len(unmapped)} ONNX initializer(s) map nowhere: {unmapped[:10]}")
    ops = {node.op_type for node in graph.node}
    if "Erf" not in ops:
        raise ValueError("no Erf node: the activation is not BERT's exact GELU")
    epsilons = {a.f for n in graph.node if n.op_type == "LayerNormalization" for a in n.attribute
                if a.name == "epsilon"}
    if len(epsilons) != 1:
        raise ValueError(f"expected one LayerNorm epsilon, found {sorted(epsilons)}")
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    config = {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": len({m.group(1) for k in state if (m := _LAYER.match(k))}),
        "num_attention_heads": _attention_heads(graph, f"{prefix}encoder.layer.0.attention.self.query.bias",
                                                int(hidden)),
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": float(f"{epsilons.pop():.6g}"),  # float32 1e-12 -> 1e-12
        "hidden_act": "gelu",
    }
    return state, config
