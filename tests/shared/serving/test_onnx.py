"""ONNX export (shared/serving/onnx.py, ``transferlab export``): tiny image and text packages export with
their softmax, ONNX Runtime matches PyTorch on the test split (<= 1e-4) at any batch size (and, for text,
any sequence length), a file that disagrees with its package fails the check, and the scikit-learn baseline
says it cannot be exported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from datasets import DatasetDict

from pipelines import cli
from shared.config import ModelParams
from shared.models import build_model, load_tokenizer
from shared.regimes.base import PACKAGE
from shared.serving.onnx import NotExportableError, OnnxMismatchError, check_onnx, export_onnx
from shared.serving.package import ModelCard, raw_inputs, save_baseline, save_network


def package(folder: Path, modality: str, params: ModelParams, dd: DatasetDict, seed: int = 0) -> Path:
    """A network package of an untrained tiny classifier (its random head gives probabilities away from
    0.5, which is all an export check needs)."""
    torch.manual_seed(seed)
    model = build_model(params, modality, 2, pretrained=params.pretrained)  # type: ignore[arg-type]
    card = ModelCard(domain="tiny", regime="full", modality=modality, task="binary",  # type: ignore[arg-type]
                     class_names=list(dd["test"].features["label"].names), kind="network",
                     model=params.model_dump(mode="json", exclude={"weights_file", "extract_batch_size"}))
    save_network(model, folder, card, tokenizer=load_tokenizer(params) if modality == "text" else None)
    return folder


def graph_inputs(file: Path) -> dict[str, tuple[int, list[str | int]]]:
    """name -> (ONNX element type, dims: a name for a dynamic axis, else its size)."""
    model = onnx.load(str(file))
    return {i.name: (i.type.tensor_type.elem_type,
                     [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input}


def test_image_export_cli_and_dynamic_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            tiny_image_params: ModelParams, image_dd: DatasetDict) -> None:
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    pkg = package(tmp_path / "models" / "tiny" / "b" / "full" / PACKAGE, "image", tiny_image_params, image_dd)
    image_dd.save_to_disk(str(tmp_path / "data" / "prepared" / "tiny"))
    assert cli.main(["export", "tiny", "--regime", "full", "--format", "onnx"]) == 0
    onnx_file = tmp_path / "models" / "tiny" / "b" / "full" / "model.onnx"
    report = json.loads((onnx_file.parent / "model.check.json").read_text())
    assert report["n_items"] == len(image_dd["test"]) and report["max_abs_diff"] <= 1e-4
    assert graph_inputs(onnx_file) == {"image": (onnx.TensorProto.UINT8, ["batch", 3, 32, 32])}
    assert [o.name for o in onnx.load(str(onnx_file)).graph.output] == ["probabilities"]
    items = raw_inputs(image_dd["test"])
    for n in (1, 5):
        assert check_onnx(pkg, onnx_file, items[:n])["n_items"] == n
    package(pkg, "image", tiny_image_params, image_dd, seed=1)  # other weights: the file no longer matches
    with pytest.raises(OnnxMismatchError, match="differ from PyTorch"):
        check_onnx(pkg, onnx_file, items)


def test_text_export_dynamic_batch_and_length(tmp_path: Path, tiny_bert_params: ModelParams,
                                              text_dd: DatasetDict) -> None:
    pkg = package(tmp_path / PACKAGE, "text", tiny_bert_params, text_dd)
    onnx_file = export_onnx(pkg, tmp_path / "text.onnx")
    inputs = graph_inputs(onnx_file)
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]  # the BERT tokenizer's
    assert all(v == (onnx.TensorProto.INT64, ["batch", "sequence"]) for v in inputs.values())
    texts = raw_inputs(text_dd["test"])
    texts[0] = "a much longer review than any of the others, " * 4  # longer than the export's example
    report = check_onnx(pkg, onnx_file, texts)
    assert report["n_items"] == len(texts) and report["max_abs_diff"] <= 1e-4
    assert report["inputs"] == list(inputs)
    for n in (1, 5):
        assert check_onnx(pkg, onnx_file, texts[:n])["max_abs_diff"] <= 1e-4


def test_baseline_is_not_exportable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path / "models" / "tiny" / "b" / "baseline" / PACKAGE
    card = ModelCard(domain="tiny", regime="baseline", modality="text", task="binary",
                     class_names=["negative", "positive"], kind="baseline", model={})
    save_baseline({"classifier": LogisticRegression().fit(np.eye(2), [0, 1])}, folder, card)
    with pytest.raises(NotExportableError, match="baseline package .* no network to export"):
        export_onnx(folder, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    (tmp_path / "data" / "prepared" / "tiny" / "test").mkdir(parents=True)
    assert cli.main(["export", "tiny", "--regime", "baseline", "--format", "onnx"]) == 2
    assert "no network to export" in capsys.readouterr().err
