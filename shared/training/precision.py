"""The numeric precision of training, feature extraction and evaluation: fp32, bf16 autocast, or ``auto``
(measured on the CPU).

CPUs with bf16 matrix units (Intel AMX ``amx_bf16``, ``avx512_bf16`` on Intel and AMD Zen 4) run bf16
autocast through oneDNN, which is several times faster for a BERT-style encoder and *slower* for
depthwise-convolution networks such as EfficientNet-Lite. So ``auto`` on the CPU times a few real
training steps of the actual model at the actual batch shape in each precision (alternately on one copy,
keeping the fastest step of each) and keeps bf16 only when it is at least :data:`SPEEDUP` times faster.
The decision is cached per (backbone, network and trainable parameters (:func:`model_signature`), input
shape, memory layout, CPU flags, torch version) in :func:`cache_file`, outside the DVC outputs: regimes that
train the same parameters of the same network (full, scratch, l2sp, lp_ft) share one measurement, and every
regime that scores the same network shares one for evaluation. Without bf16 units ``auto`` is fp32 without
measuring; on CUDA it is bf16 (the GPU path).
The loss, the metrics and the probe are never autocast (``shared.training.loop`` computes the loss in
fp32 from the logits).

The timing steps run on a deep copy of the model with its own optimizer, and every RNG stream is
restored afterwards, so the run that follows is bit for bit the run without the measurement.

The memory layout follows the precision (:func:`use_channels_last`): an image model's bf16 *forward* passes
on the CPU (extraction, evaluation) run channels-last, where oneDNN's bf16 convolutions are 1.7x faster for
EfficientNet-Lite0 (``benchmarks/precision.py``); ``auto`` times bf16 in that layout. bf16 training steps
gained nothing from it, and the fp32 path keeps its layout, so fp32 stays bit for bit what it was.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared.files.atomic import write_json
from shared.training.checkpoint import capture_rng_state, restore_rng_state

Precision = Literal["fp32", "bf16"]
SPEEDUP = 1.15  # bf16 must be at least this much faster to be chosen
TIMED_STEPS = 3  # timed steps per precision, alternated, after one warm-up step in each
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a phase runs in, why, and the measured seconds per step (a training step, or a forward
    pass for extraction and evaluation) in each precision, when measured."""

    precision: Precision
    reason: Literal["asked", "cuda", "no bf16 units", "measured", "cached"]
    fp32_step_seconds: float | None = None
    bf16_step_seconds: float | None = None

    def record(self) -> dict[str, Any]:
        """For the run's metrics JSON and MLflow params."""
        return {f"precision_{k}" if k != "precision" else k: v for k, v in asdict(self).items()}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cache_file() -> Path:
    """Where measured decisions are kept: ``$TRANSFERLAB_CACHE/precision.json`` (default
    ``~/.cache/transferlab``)."""
    root = os.environ.get("TRANSFERLAB_CACHE") or Path.home() / ".cache" / "transferlab"
    return Path(root) / "precision.json"


def use_channels_last(setting: bool | None, model: nn.Module, device: torch.device, precision: Precision = "fp32",
                      *, forward_only: bool = False) -> bool:
    """Whether an image model runs channels-last: ``setting`` (``train.channels_last``) when given; ``None``
    (auto) means on CUDA, and on the CPU for bf16 forward passes (``forward_only``: extraction and evaluation,
    not training). Never for text."""
    if getattr(model, "modality", None) != "image":
        return False
    if setting is not None:
        return setting
    return device.type == "cuda" or (forward_only and precision == "bf16")


def forward_layouts(setting: bool | None, model: nn.Module, device: torch.device) -> dict[str, bool]:
    """The layout each precision's forward passes run in (:func:`use_channels_last`), for the cache key of a
    forward timing (:func:`forward_seconds`): ``{"fp32_channels_last": ..., "bf16_channels_last": ...}``."""
    return {f"{p}_channels_last": use_channels_last(setting, model, device, p, forward_only=True)
            for p in ("fp32", "bf16")}


def model_signature(model: nn.Module, *, trainable: bool = True) -> dict[str, Any]:
    """What a timing of ``model`` depends on besides the backbone and the input shape, for the cache key: its
    class and parameter count, and (for training steps, ``trainable``) how many of them train."""
    params = list(model.parameters())
    signature: dict[str, Any] = {"module": type(model).__name__, "parameters": sum(p.numel() for p in params)}
    if trainable:
        signature["trainable"] = sum(p.numel() for p in params if p.requires_grad)
    return signature


def to_memory_format(inputs: Any, channels_last: bool) -> Any:
    """Image batches (4-D tensors) in channels-last layout when asked; anything else unchanged."""
    if channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def step_seconds(model: nn.Module, inputs: Any, labels: torch.Tensor, precisions: Sequence[Precision] = ("fp32",),
                 steps: int = TIMED_STEPS) -> dict[Precision, float]:
    """Seconds per AdamW training step (forward, fp32 loss, backward, update) of one copy of ``model`` on one
    batch in each of ``precisions`` (bf16 CPU autocast or none): a warm-up step in each, then ``steps``
    rounds that alternate the precisions step by step, so that load from elsewhere hits them alike; the
    fastest step of each (on a shared machine the least disturbed). The model and RNG streams are untouched.
    """
    rng = capture_rng_state()
    trial = copy.deepcopy(model)
    trial.train()
    optimizer = torch.optim.AdamW([p for p in trial.parameters() if p.requires_grad], lr=1e-6)
    times: dict[Precision, list[float]] = {p: [] for p in precisions}
    try:
        for _ in range(steps + 1):
            for precision, seconds in times.items():
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    outputs = trial(inputs)
                logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
                loss = F.cross_entropy(logits.float(), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                seconds.append(time.perf_counter() - t0)
    finally:
        restore_rng_state(rng)
    return {p: min(t[1:]) for p, t in times.items()}


@torch.no_grad()
def forward_seconds(model: Callable[[Any], Any], inputs: Any, labels: torch.Tensor,
                    precisions: Sequence[Precision] = ("fp32",), steps: int = TIMED_STEPS,
                    channels_last: bool | None = None) -> dict[Precision, float]:
    """Seconds per no-grad forward pass of ``model`` (a module in eval mode, or a bound method of one such as
    its ``features``) on one batch in each of ``precisions``, alternated as in :func:`step_seconds` (``labels``
    unused: the same signature). Each precision runs in its layout (:func:`use_channels_last` with the
    setting ``channels_last``): a channels-last one on a channels-last copy of the module, the model itself
    untouched. A forward pass draws no random numbers in eval mode."""
    module = getattr(model, "__self__", model)  # the module of a bound method
    twin: nn.Module | None = None
    runs: dict[Precision, tuple[Callable[[Any], Any], Any]] = {}
    for precision in precisions:
        runs[precision] = (model, inputs)
        if (isinstance(module, nn.Module) and isinstance(inputs, torch.Tensor)
                and use_channels_last(channels_last, module, inputs.device, precision, forward_only=True)):
            if twin is None:
                twin = copy.deepcopy(module).to(memory_format=torch.channels_last)
            fn = twin if module is model else getattr(twin, model.__name__)  # type: ignore[attr-defined]
            runs[precision] = (fn, to_memory_format(inputs, True))
    times: dict[Precision, list[float]] = {p: [] for p in precisions}
    for _ in range(steps + 1):
        for precision, (fn, batch) in runs.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                fn(batch)
            times[precision].append(time.perf_counter() - t0)
    return {p: min(t[1:]) for p, t in times.items()}


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The autocast context of ``precision`` on ``device`` (bf16 autocast, or disabled for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


Timer = Callable[[Any, Any, torch.Tensor, Sequence[Precision]], Mapping[Precision, float]]


def choose_precision(requested: Literal["fp32", "bf16", "auto"], *, device: torch.device,
                     model: Callable[[Any], Any] | None = None,
                     batch: Callable[[], tuple[Any, torch.Tensor]] | None = None,
                     key: Mapping[str, Any] | None = None, flags: set[str] | None = None,
                     timer: Timer = step_seconds, cache: Path | None = None) -> PrecisionChoice:
    """The precision to run in: ``requested`` unless it is ``auto`` (see the module docstring).

    ``model`` and ``batch`` (a function giving inputs and labels, called only when measuring) are what
    ``auto`` times with ``timer`` (training steps by default; :func:`forward_seconds` for extraction and
    evaluation); ``key`` names the phase, the model and the input shape for the cache (CPU flags and the torch
    version are added).
    """
    if requested != "auto":
        return PrecisionChoice(requested, "asked")
    if device.type == "cuda":
        return PrecisionChoice("bf16", "cuda")
    flags = cpu_flags() if flags is None else flags
    units = sorted(f for f in BF16_FLAGS if f in flags)
    if not units:
        return PrecisionChoice("fp32", "no bf16 units")
    if model is None or batch is None:
        raise ValueError("precision auto on a CPU with bf16 units needs a model and a batch to time")
    cache = cache_file() if cache is None else cache
    entry = json.dumps({**(key or {}), "cpu_bf16": units, "torch": torch.__version__}, sort_keys=True)
    known: dict[str, Any] = {}
    if cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}  # an unreadable cache is measured again and rewritten
    if entry in known:
        hit = known[entry]
        return PrecisionChoice(hit["precision"], "cached", hit["fp32_step_seconds"], hit["bf16_step_seconds"])
    rng = capture_rng_state()  # drawing the batch (augmentation) must not move the run's RNG streams
    try:
        inputs, labels = batch()
    finally:
        restore_rng_state(rng)
    seconds = timer(model, inputs, labels, ("fp32", "bf16"))
    fp32, bf16 = seconds["fp32"], seconds["bf16"]
    choice = PrecisionChoice("bf16" if fp32 >= SPEEDUP * bf16 else "fp32", "measured", fp32, bf16)
    known[entry] = {"precision": choice.precision, "fp32_step_seconds": fp32, "bf16_step_seconds": bf16}
    write_json(cache, known)
    return choice
