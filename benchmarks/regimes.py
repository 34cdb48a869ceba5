"""(c) What a training step costs per regime: partial and LoRA versus full fine-tuning.

tf_efficientnet_lite0 at 96 px, batch 32, the vision section's regimes (partial: last ``blocks`` blocks;
LoRA rank/alpha from params.yaml), the shared training step (``shared.training.forward_loss`` +
``optimizer_step``). Each regime runs in its own (spawned) process so that its peak resident memory is its
own: ``peak_rss_mb`` is the process peak, ``step_rss_increase_mb`` the peak during the steps above the
peak after building the model (activations kept for backward, gradients, optimizer state).

Partial fine-tuning must skip the backward pass of the frozen blocks: checked by forward hooks (no output
of a frozen block requires grad, so autograd records nothing there), by the frozen parameters' ``.grad``
staying ``None``, and by counting ``aten::convolution_backward`` calls with ``torch.profiler``.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import setup_regime, write_result
from shared.config import load_params
from shared.models import build_model
from shared.regimes.finetune import count_parameters
from shared.training.loop import forward_loss, make_accelerator, make_optimizer, optimizer_step

WARMUP = 2


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _frozen_block_checks(model: torch.nn.Module, batch: Any, accelerator: Any) -> dict[str, Any]:
    """Hooks on the modules of the frozen blocks: does any output require grad? Any grad on frozen params?"""
    frozen_modules = [m for m in model.modules()
                      if list(m.parameters(recurse=False)) and not any(p.requires_grad for p in m.parameters())]
    flagged: list[bool] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: flagged.append(
        isinstance(out, torch.Tensor) and out.requires_grad)) for m in frozen_modules]
    loss, _, _ = forward_loss(model, batch, accelerator, aux_weight=0.3)
    for h in hooks:
        h.remove()
    loss.backward()
    frozen = [p for p in model.parameters() if not p.requires_grad]
    return {"frozen_modules_hooked": len(frozen_modules), "frozen_outputs_requiring_grad": int(sum(flagged)),
            "frozen_params_with_grad": sum(p.grad is not None for p in frozen),
            "frozen_blocks_skip_backward": not any(flagged) and all(p.grad is None for p in frozen)}


def _conv_backward_calls(model: torch.nn.Module, batch: Any, accelerator: Any) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss, _, _ = forward_loss(model, batch, accelerator, aux_weight=0.3)
        loss.backward()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::convolution_backward")


def _one_regime(regime: str, batch_size: int, steps: int, queue: Any) -> None:
    torch.manual_seed(0)
    dp = load_params().domain("vision").model_copy(deep=True)
    dp.model.image_size = 96
    model = build_model(dp.model, "image", 10, pretrained=False)
    model, groups = setup_regime(model, regime, dp)
    trainable, total = count_parameters(model)
    accelerator = make_accelerator(dp.train, cpu=True)
    optimizer = make_optimizer(groups, accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 256, (batch_size, 3, 96, 96), dtype=torch.uint8, generator=gen),
             torch.randint(0, 10, (batch_size,), generator=gen))
    rss_built = _rss()
    checks = _frozen_block_checks(model, batch, accelerator) if regime == "partial" else {}
    optimizer.zero_grad(set_to_none=True)
    conv_bw = _conv_backward_calls(model, batch, accelerator)
    optimizer.zero_grad(set_to_none=True)
    times = []
    for i in range(steps + WARMUP):
        t0 = time.perf_counter()
        loss, _, _ = forward_loss(model, batch, accelerator, aux_weight=0.3)
        optimizer_step(model, loss, optimizer, accelerator, grad_clip=dp.train.grad_clip)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    queue.put({"regime": regime, "trainable_params": trainable, "total_params": total,
               "trainable_fraction": trainable / total, "step_seconds": times,
               "step_seconds_median": float(np.median(times)), "step_seconds_min": min(times),
               "images_per_s": batch_size / float(np.median(times)),
               "peak_rss_mb": _rss(), "step_rss_increase_mb": _rss() - rss_built,
               "conv_backward_calls_per_step": conv_bw, **checks})


def run(regimes: tuple[str, ...] = ("full", "partial", "lora"), batch_size: int = 32, steps: int = 5
        ) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # not fork: the parent's OpenMP pool would deadlock the child
    rows: dict[str, Any] = {}
    for regime in regimes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_one_regime, args=(regime, batch_size, steps, queue))
        proc.start()
        rows[regime] = queue.get(timeout=600)
        proc.join()
    full = rows.get("full")
    if full:
        for row in rows.values():
            row["step_time_vs_full"] = row["step_seconds_median"] / full["step_seconds_median"]
            row["step_rss_increase_vs_full"] = row["step_rss_increase_mb"] / max(full["step_rss_increase_mb"], 1e-9)
    dp = load_params().domain("vision")
    result = {"settings": {"backbone": dp.model.backbone, "image_size": 96, "batch_size": batch_size,
                           "timed_steps": steps, "warmup_steps": WARMUP,
                           "partial_blocks": dp.regimes["partial"].blocks,
                           "lora": dp.regimes["lora"].adapter.model_dump(), "device": "cpu",
                           "input": "synthetic uint8 batch (step time does not depend on the pixels)",
                           "memory": "CPU peak RSS per forked process (ru_maxrss)"},
              "regimes": rows}
    write_result("regimes", result)
    return result
