"""Training precision (shared/training/precision.py): ``auto`` keeps bf16 only where it measures faster,
falls back to fp32 without bf16 units, caches and records its choice; the timing leaves the run alone;
a ``precision: bf16`` run trains and reports finite metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams, TrainParams
from shared.registry import get_regime
from shared.testing.regimes import tiny_context
from shared.training import run as training_run
from shared.training.precision import (
    SPEEDUP,
    PrecisionChoice,
    choose_precision,
    forward_seconds,
    model_signature,
    step_seconds,
    use_channels_last,
)

CPU = torch.device("cpu")
AMX = {"fpu", "avx512f", "amx_bf16", "amx_tile"}


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1])


def timer_with(fp32: float, bf16: float, calls: list[tuple[str, ...]]) -> Any:
    def timer(model: Any, inputs: Any, labels: Any, precisions: Any) -> dict[str, float]:
        calls.append(tuple(precisions))
        return {p: {"fp32": fp32, "bf16": bf16}[p] for p in precisions}
    return timer


@pytest.mark.parametrize(("fp32", "bf16", "expected"), [
    (1.0, 1.0 / (SPEEDUP + 0.05), "bf16"),   # fast enough
    (1.0, 1.0 / (SPEEDUP - 0.05), "fp32"),   # faster, but below the 1.15x bar
    (1.0, 2.5, "fp32"),                      # slower (EfficientNet's depthwise convolutions on AMX)
])
def test_auto_keeps_bf16_only_when_it_measures_fast_enough(tmp_path: Path, fp32: float, bf16: float,
                                                           expected: str) -> None:
    calls: list[tuple[str, ...]] = []
    choice = choose_precision("auto", device=CPU, model=torch.nn.Linear(2, 2), batch=tiny_batch, key={"m": 1},
                              flags=AMX, timer=timer_with(fp32, bf16, calls), cache=tmp_path / "p.json")
    assert (choice.precision, choice.reason) == (expected, "measured") and calls == [("fp32", "bf16")]
    assert (choice.fp32_step_seconds, choice.bf16_step_seconds) == (fp32, bf16)
    record = choice.record()
    assert record["precision"] == expected and record["precision_fp32_step_seconds"] == fp32


def test_the_choice_is_cached_per_key_and_cpu(tmp_path: Path) -> None:
    cache, calls = tmp_path / "p.json", list[tuple[str, ...]]()
    timer = timer_with(1.0, 0.2, calls)
    first = choose_precision("auto", device=CPU, model=torch.nn.Linear(2, 2), batch=tiny_batch, key={"m": 1},
                             flags=AMX, timer=timer, cache=cache)
    again = choose_precision("auto", device=CPU, model=torch.nn.Linear(2, 2), batch=tiny_batch, key={"m": 1},
                             flags=AMX, timer=timer, cache=cache)
    assert (first.reason, again.reason, again.precision, len(calls)) == ("measured", "cached", "bf16", 1)
    other = choose_precision("auto", device=CPU, model=torch.nn.Linear(2, 2), batch=tiny_batch, key={"m": 2},
                             flags=AMX, timer=timer, cache=cache)
    assert other.reason == "measured" and len(calls) == 2  # another model / shape: measured anew


def test_the_cache_key_names_the_network_and_what_trains(tiny_image_params: ModelParams) -> None:
    """Regimes that train the same parameters of the same network share a training measurement; scoring
    shares one whatever trained; another network does not."""
    from shared.models import build_model

    model = build_model(tiny_image_params, "image", 2, pretrained=False)
    full = model_signature(model)
    assert full == model_signature(build_model(tiny_image_params, "image", 2, pretrained=False))  # scratch
    scored = model_signature(model, trainable=False)
    for name, p in model.named_parameters():  # a partial / linear-probe regime's trainable set: the head
        if not name.startswith(model.head_name):
            p.requires_grad_(False)
    assert model_signature(model)["trainable"] < full["trainable"]
    assert model_signature(model, trainable=False) == scored and "trainable" not in scored
    assert model_signature(build_model(tiny_image_params, "image", 3, pretrained=False), trainable=False) != scored


@pytest.mark.parametrize("phase", ["train", "evaluate"])
def test_a_forced_layout_is_measured_on_its_own(tmp_path: Path, image_dd: DatasetDict, phase: str,
                                                tiny_image_params: ModelParams,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.channels_last: true`` times (and caches) the layout it runs in, not the default layout's
    decision; forcing the layout the default already trains in (off on the CPU) shares its training decision."""
    keys: dict[bool | None, str] = {}
    layout: bool | None = None

    def spy(requested: str, **kwargs: Any) -> PrecisionChoice:
        if kwargs["key"].get("phase", "train") == phase:
            keys[layout] = json.dumps(kwargs["key"], sort_keys=True)
        return PrecisionChoice("fp32", "asked")

    monkeypatch.setattr(training_run, "choose_precision", spy)
    monkeypatch.setattr(training_run, "log_metrics", lambda *args, **kwargs: None)
    for layout in (None, True, False):
        dp = DomainParams(data=DataParams(dataset="tiny"), model=tiny_image_params,
                          train=TrainParams(epochs=1, batch_size=8, channels_last=layout))
        ctx = tiny_context(dp, "image", image_dd, tmp_path / str(layout))
        (tmp_path / str(layout) / "out").mkdir(parents=True)
        training_run.run_regime(get_regime("full").for_domain(dp), ctx, tmp_path / str(layout) / "out")
    assert keys[None] != keys[True]
    assert (keys[None] == keys[False]) is (phase == "train")  # scoring's default runs bf16 channels-last


def test_without_bf16_units_auto_is_fp32_and_measures_nothing(tmp_path: Path) -> None:
    """The flag check forced off (an AMD EPYC without AVX512-BF16, say): no timing, fp32."""
    def never(*args: Any) -> float:
        raise AssertionError("timed on a CPU without bf16 units")

    choice = choose_precision("auto", device=CPU, model=torch.nn.Linear(2, 2), batch=tiny_batch,
                              flags={"fpu", "avx2"}, timer=never, cache=tmp_path / "p.json")
    assert (choice.precision, choice.reason) == ("fp32", "no bf16 units")
    assert not (tmp_path / "p.json").exists()
    assert choose_precision("bf16", device=CPU).reason == "asked"
    assert choose_precision("auto", device=torch.device("cuda")).precision == "bf16"


def test_timing_leaves_the_model_and_the_rng_streams_alone() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3 * 32 * 32, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    inputs, labels = tiny_batch()
    seconds = step_seconds(model, inputs, labels, ("fp32", "bf16"), steps=1)
    assert set(seconds) == {"fp32", "bf16"} and min(seconds.values()) > 0
    assert torch.equal(torch.rand(3), expected)  # dropout in the timed steps drew nothing from the run's stream
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_bf16_run_trains_and_reports_finite_metrics(tmp_path: Path, image_dd: DatasetDict,
                                                      tiny_image_params: ModelParams,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training_run, "log_metrics", lambda *args, **kwargs: None)  # no MLflow run here
    dp = DomainParams(data=DataParams(dataset="tiny"), model=tiny_image_params,
                      train=TrainParams(epochs=1, batch_size=8, precision="bf16", eval_precision="fp32"))
    regime = get_regime("full").for_domain(dp)
    ctx = tiny_context(dp, "image", image_dd, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    preds, info = training_run.run_regime(regime, ctx, out)
    assert (info["precision"], info["precision_reason"]) == ("bf16", "asked")
    assert (info["eval_precision"], info["eval_precision_reason"]) == ("fp32", "asked")
    assert np.isfinite(info["history"][0]["train_loss"]) and np.isfinite(preds.test_probs).all()


def test_bf16_scoring_is_recorded_and_close_to_fp32(tmp_path: Path, image_dd: DatasetDict,
                                                    tiny_image_params: ModelParams,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.eval_precision``: the same fp32 training scored in bf16 and in fp32; the probabilities differ
    by bf16 rounding only."""
    monkeypatch.setattr(training_run, "log_metrics", lambda *args, **kwargs: None)
    probs = {}
    for scoring in ("bf16", "fp32"):
        dp = DomainParams(data=DataParams(dataset="tiny"), model=tiny_image_params,
                          train=TrainParams(epochs=1, batch_size=8, precision="fp32", eval_precision=scoring))
        ctx = tiny_context(dp, "image", image_dd, tmp_path / scoring)
        out = tmp_path / scoring / "out"
        out.mkdir(parents=True)
        preds, info = training_run.run_regime(get_regime("full").for_domain(dp), ctx, out)
        assert (info["precision"], info["eval_precision"]) == ("fp32", scoring)
        probs[scoring] = preds.test_probs
    assert np.isfinite(probs["bf16"]).all() and not np.array_equal(probs["bf16"], probs["fp32"])
    assert np.abs(probs["bf16"] - probs["fp32"]).max() < 0.05


def test_the_layout_follows_the_precision(tiny_image_params: ModelParams, tiny_bert_params: ModelParams) -> None:
    """Auto (no setting): channels-last on CUDA, and on the CPU for an image model's bf16 forward passes only;
    fp32 and training keep their layout; text never; a setting wins."""
    from shared.models import build_model

    image = build_model(tiny_image_params, "image", 2, pretrained=False)
    text = build_model(tiny_bert_params, "text", 2, pretrained=False)
    assert use_channels_last(None, image, CPU, "bf16", forward_only=True)
    assert not use_channels_last(None, image, CPU, "fp32", forward_only=True)
    assert not use_channels_last(None, image, CPU, "bf16")  # training: no gain measured
    assert use_channels_last(None, image, torch.device("cuda"))
    assert not use_channels_last(False, image, CPU, "bf16", forward_only=True)
    assert use_channels_last(True, image, CPU, "fp32")
    assert not use_channels_last(None, text, CPU, "bf16", forward_only=True)
    assert not use_channels_last(True, text, torch.device("cuda"))


def test_bf16_forward_timing_runs_channels_last_on_a_copy(tiny_image_params: ModelParams) -> None:
    from shared.models import build_model

    model = build_model(tiny_image_params, "image", 2, pretrained=False).eval()
    seen: list[bool] = []  # per pass: the first convolution's input in channels-last layout
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    stem.register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last) and not args[0].is_contiguous()))
    inputs, labels = tiny_batch()
    forward_seconds(model.features, inputs, labels, ("fp32", "bf16"), steps=1)  # a bound method: its module's copy
    forward_seconds(model, inputs, labels, ("fp32", "bf16"), steps=1)
    assert seen == [False, True] * 4  # per call: warm-up and one timed pass, alternated
    assert all(p.is_contiguous() for p in model.parameters())  # the model's own layout is untouched


def test_bf16_extraction_gives_float32_features_close_to_fp32(image_dd: DatasetDict,
                                                               tiny_image_params: ModelParams) -> None:
    from shared.data.features import extract_features
    from shared.data.loaders import make_dataset, make_loader
    from shared.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_image_params, "image", 2, pretrained=False)
    loader = make_loader(make_dataset(image_dd["test"], model), 8)
    fp32, labels = extract_features(model, loader, CPU)
    bf16, same = extract_features(model, loader, CPU, "bf16")
    assert bf16.dtype == np.float32 and np.array_equal(labels, same) and np.isfinite(bf16).all()
    assert not np.array_equal(bf16, fp32)
    model.to(memory_format=torch.channels_last)  # what the extract stage runs for bf16 on the CPU
    last, _ = extract_features(model, loader, CPU, "bf16", channels_last=True)
    for other in (bf16, last):
        cosine = (other * fp32).sum(1) / (np.linalg.norm(other, axis=1) * np.linalg.norm(fp32, axis=1))
        assert cosine.min() > 0.99


def test_forward_timing_draws_no_random_numbers() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3 * 32 * 32, 2)).eval()
    inputs, labels = tiny_batch()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert min(forward_seconds(model, inputs, labels, ("fp32", "bf16"), steps=1).values()) > 0
    assert torch.equal(torch.rand(3), expected)

