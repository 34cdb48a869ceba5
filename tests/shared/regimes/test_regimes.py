"""What each regime trains, at which learning rates, and that frozen weights and statistics stay put."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from torch import nn

from shared.config import DataParams, DomainParams, ModelParams, TrainParams, load_params
from shared.models import build_model
from shared.regimes.bitfit import bias_and_norm_names
from shared.regimes.finetune import count_parameters, init_head_from_probe, set_train_mode
from shared.regimes.probe import fit_probe
from shared.registry import get_regime, list_regimes
from shared.testing.regimes import tiny_context

REPO_ROOT = Path(__file__).resolve().parents[3]
NETWORK_REGIMES = [name for name in list_regimes() if get_regime(name).trains_network]
ADAPTERS = ("lora", "dora")
LR, FACTOR, BLOCKS = 1e-2, 0.1, 2


def domain_params(model: ModelParams, **train: Any) -> DomainParams:
    return DomainParams(data=DataParams(dataset="tiny"), model=model,
                        train=TrainParams(lr=LR, backbone_lr_factor=FACTOR, **train),
                        regimes={"partial": {"blocks": BLOCKS}})


@pytest.fixture()
def setup_regime(tmp_path: Path, image_dd: DatasetDict, text_dd: DatasetDict) -> Any:
    """``setup(model, regime, dp) -> (model, param_groups)``: the registered regime's ``prepare`` on a real
    tiny context (with a feature cache of ``model`` for regimes that read features)."""
    counter = iter(range(1000))

    def setup(model: nn.Module, regime: str, dp: DomainParams) -> tuple[nn.Module, list[dict[str, Any]]]:
        modality = model.modality
        cls = get_regime(regime)
        ctx = tiny_context(dp, modality, image_dd if modality == "image" else text_dd,
                           tmp_path / str(next(counter)), model=model if cls.needs_features else None)
        prepared = cls.for_domain(dp).prepare(model, ctx)
        return prepared.model, prepared.param_groups

    return setup


def tiny_batch(modality: str, tiny_bert_dir: Path) -> tuple[object, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 0, 1])
    if modality == "image":
        return torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen), labels
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir), local_files_only=True)
    batch = tok(["a fine film", "a dull and boring film", "great", "awful acting"], padding=True,
                return_tensors="pt")
    return dict(batch), labels


@pytest.fixture(params=["image", "text"])
def modality(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture()
def model_params(modality: str, tiny_image_params: ModelParams, tiny_bert_params: ModelParams) -> ModelParams:
    return tiny_image_params if modality == "image" else tiny_bert_params


def build(model_params: ModelParams, modality: str, regime: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_params, modality, 2, pretrained=regime != "scratch")


def expected_trainable(model: nn.Module, regime: str) -> set[str]:
    """Names of the parameters ``regime`` must train, from the untouched model."""
    names = {n for n, _ in model.named_parameters()}
    head = {f"{model.head_name}.{n}" for n, _ in model.head.named_parameters()}
    if regime == "partial":
        return {n for block in model.blocks()[-BLOCKS:] for n in block} | head
    if regime == "bitfit":
        return bias_and_norm_names(model) | head
    return names


@pytest.mark.parametrize("regime", NETWORK_REGIMES)
def test_setup_regime_trains_exactly_the_intended_parameters(regime: str, modality: str,
                                                              model_params: ModelParams,
                                                              tiny_bert_dir: Path, setup_regime: Any) -> None:
    model = build(model_params, modality, regime)
    params = domain_params(model_params)
    expected = expected_trainable(model, regime)
    model, groups = setup_regime(model, regime, params)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    if regime in ADAPTERS:
        assert trainable, "LoRA must train something"
        for name in trainable:
            assert "lora_" in name or ".modules_to_save." in name, f"{name} trains under LoRA"
        saved = {n for n in trainable if ".modules_to_save." in n}
        assert {n.rsplit(".", 1)[-1] for n in saved} == {"weight", "bias"}, saved
        assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
        assert any("lora_magnitude_vector" in n for n in trainable) == (regime == "dora")
        assert all(g["lr"] == LR for g in groups)
    else:
        assert trainable == expected
        if regime in ("partial", "bitfit"):
            assert len(trainable) < len(list(model.parameters()))
        head_ids = {id(p) for p in model.head.parameters()}
        by_name = {g["name"]: g for g in groups}
        assert {id(p) for p in by_name["head"]["params"]} == head_ids
        assert by_name["head"]["lr"] == LR
        factor = 1.0 if not get_regime(regime).pretrained else FACTOR
        assert by_name["backbone"]["lr"] == pytest.approx(LR * factor)
        assert all(id(p) not in head_ids for p in by_name["backbone"]["params"])

    # every trainable parameter is in exactly one group, and no frozen one is
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}
    assert count_parameters(model)[0] == sum(p.numel() for p in model.parameters() if p.requires_grad)

    # three optimizer steps: frozen parameters bit-identical, trainable ones changed (the zero-initialised head
    # passes no gradient back on the first step; LoRA's B and then A start moving one step later each; DoRA's
    # magnitude moves once B has)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(groups)
    set_train_mode(model)
    inputs, labels = tiny_batch(modality, tiny_bert_dir)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{regime}: trainable {name} did not change"
        else:
            assert torch.equal(p, before[name]), f"{regime}: frozen {name} changed"


def test_partial_keeps_batchnorm_statistics_of_frozen_blocks(tiny_image_params: ModelParams,
                                                              setup_regime: Any) -> None:
    """``batchnorm: train``: the unfrozen blocks' BatchNorm layers update their statistics, frozen ones not."""
    model = build(tiny_image_params, "image", "partial")
    model, _ = setup_regime(model, "partial", domain_params(tiny_image_params, batchnorm="train"))
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    frozen = {n for n, m in bns.items() if not m.weight.requires_grad}
    assert frozen and frozen != set(bns), "the tiny model must have frozen and trainable BatchNorm layers"
    before = {n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
              for n, m in bns.items()}
    set_train_mode(model)
    assert model.training
    model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    for name, m in bns.items():
        mean, var, count = before[name]
        if name in frozen:
            assert not m.training
            assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var), name
            assert int(m.num_batches_tracked) == count
        else:
            assert m.training
            assert not torch.equal(m.running_mean, mean), f"trainable BatchNorm {name} did not update"


@pytest.mark.parametrize("regime", ["partial", "full", "lp_ft", "scratch", "bitfit", "l2sp"])
def test_batchnorm_frozen_keeps_pretrained_statistics(regime: str, tiny_image_params: ModelParams,
                                                      setup_regime: Any) -> None:
    """``batchnorm: frozen`` (the default): fine-tuning a pretrained backbone leaves every running statistic
    alone while the affine parameters still train; scratch always updates its statistics."""
    model = build(tiny_image_params, "image", regime)
    model, _ = setup_regime(model, regime, domain_params(tiny_image_params))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    set_train_mode(model)
    model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    changed = [not torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True)]
    assert all(changed) if regime == "scratch" else not any(changed)
    if regime in ("full", "bitfit", "l2sp"):
        assert all(m.weight.requires_grad for m in bns)


@pytest.mark.parametrize(("head_init", "zero"), [("zeros", True), ("random", False)])
def test_new_head_starts_at_zero(head_init: str, zero: bool, tiny_image_params: ModelParams,
                                 setup_regime: Any) -> None:
    """``head_init: zeros``: the first loss is log(classes) whatever the features."""
    model = build(tiny_image_params, "image", "full")
    model, _ = setup_regime(model, "full", domain_params(tiny_image_params, head_init=head_init))
    assert bool((model.head.weight == 0).all()) == zero
    if zero:
        assert not model.head.bias.any()
    logits = model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    if zero:
        assert nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(np.log(2))


@pytest.mark.parametrize("regime", ADAPTERS)
@pytest.mark.parametrize("domain", ["vision", "nlp"])
def test_adapters_with_repository_defaults_train_a_few_percent(domain: str, regime: str, setup_regime: Any) -> None:
    """The real pretrained backbones with params.yaml's adapter settings (both load offline): LoRA trains
    under 2% of the parameters, DoRA (one magnitude per output channel on top) under 2.5%."""
    project = load_params(REPO_ROOT / "params.yaml")
    dp = project.domain(domain)
    modality = "image" if domain == "vision" else "text"
    assert dp.model.backbone in ("tf_efficientnet_lite0", "sentence-transformers/all-MiniLM-L6-v2")
    model = build_model(dp.model, modality, 10 if domain == "vision" else 2, pretrained=True)
    _, total = count_parameters(model)
    model, groups = setup_regime(model, regime, dp)
    trainable, total_with_adapters = count_parameters(model)
    limit = 0.02 if regime == "lora" else 0.025
    assert 0 < trainable < limit * total, f"{domain}: {regime} trains {trainable} of {total} parameters"
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    assert total_with_adapters > total  # adapters were added, nothing was dropped


@pytest.mark.parametrize("num_classes", [2, 3])
def test_init_head_from_probe_reproduces_probe_probabilities(num_classes: int,
                                                             tiny_image_params: ModelParams) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_image_params, "image", num_classes, pretrained=False).eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8))
    with torch.no_grad():
        features = model.features(images).numpy().astype(np.float32)
    labels = np.arange(60) % num_classes
    probe = fit_probe((features[:40], labels[:40]), (features[40:], labels[40:]), [1.0], metric="accuracy",
                      max_iter=500, seed=0)
    init_head_from_probe(model.head, *probe.raw_weights())
    with torch.no_grad():
        head_probs = model.head(torch.from_numpy(features)).double().softmax(-1).numpy()
        model_probs = model(images).double().softmax(-1).numpy()
    expected = probe.predict_proba(features)
    assert head_probs.shape == expected.shape == (60, num_classes)
    np.testing.assert_allclose(head_probs, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model_probs, expected, atol=1e-5, rtol=0)


def test_init_head_from_probe_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        init_head_from_probe(nn.Linear(4, 3), np.zeros((2, 4)), np.zeros(2))
