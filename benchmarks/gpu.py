"""GPU training throughput: our training step versus a plain timm-benchmark-style loop.

``python -m benchmarks.gpu --out DIR`` writes ``DIR/gpu.json``. For each model (default
``tf_efficientnet_lite0`` and ``resnet50``) at 224 px, batch 256, bf16 autocast and channels-last:

* **ours**: ``shared.models.ImageClassifier`` (pretrained=False) set up by the registered ``full`` regime's ``prepare``
  (regime ``full``), stepped by ``shared.training.train_step`` exactly as ``fit`` steps it: an
  ``Accelerator`` with ``mixed_precision="bf16"``, fused AdamW from ``make_optimizer``, gradient clipping at the
  default 1.0, the warmup-cosine schedule, uint8 images normalised inside the model.
* **reference**: a minimal loop written after what timm's ``benchmark.py`` does for training (that script is
  not available offline, so this is a re-statement, not timm's code): the bare timm model in channels-last,
  float inputs already normalised, ``torch.autocast(bf16)``, cross-entropy, SGD, ``zero_grad`` /
  ``backward`` / ``step``.

Both use synthetic data created once on the GPU (uint8 images for ours, float for the reference), cuDNN
autotuning, ``warmup`` untimed steps then ``steps`` timed steps between two ``cuda.synchronize`` calls.
Needs no network (random init). Sized to finish in under 3 minutes on one H100; ``--budget-s`` stops early
(remaining models are recorded as skipped). ``--device cpu`` with a tiny model is a smoke test only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import machine_info, setup_regime
from shared.config import DataParams, DomainParams, ModelParams, TrainParams
from shared.models import ImageClassifier
from shared.training.loop import make_accelerator, make_optimizer, train_step, warmup_cosine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _time_steps(step: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def ours(backbone: str, image_size: int, batch: int, warmup: int, steps: int, num_classes: int,
         device: torch.device) -> dict[str, Any]:
    """Images/s through shared.training.loop's step (see the module docstring)."""
    train = TrainParams(precision="bf16" if device.type == "cuda" else "fp32", channels_last=True,
                        batch_size=batch)
    dp = DomainParams(data=DataParams(dataset="synthetic"), train=train,
                      model=ModelParams(backbone=backbone, pretrained=False, image_size=image_size))
    accelerator = make_accelerator(train, cpu=device.type == "cpu")
    torch.manual_seed(0)
    model = ImageClassifier(dp.model, num_classes, pretrained=False)
    model, groups = setup_regime(model, "full", dp)
    model.to(accelerator.device).to(memory_format=torch.channels_last)  # as fit() does
    optimizer = make_optimizer(groups, accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = warmup_cosine(optimizer, warmup + steps, train.warmup_fraction)
    model.train()
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=accelerator.device)
    labels = torch.randint(0, num_classes, (batch,), device=accelerator.device)
    _reset_peak(accelerator.device)

    def step() -> None:
        train_step(model, (images, labels), optimizer, accelerator, grad_clip=train.grad_clip, scheduler=scheduler,
                   channels_last=True)

    seconds = _time_steps(step, warmup, steps, accelerator.device)
    return {"images_per_s": batch * steps / seconds, "step_ms": 1000 * seconds / steps,
            "peak_memory_mb": _peak_mb(accelerator.device), "precision": accelerator.mixed_precision}


def reference(backbone: str, image_size: int, batch: int, warmup: int, steps: int, num_classes: int,
              device: torch.device) -> dict[str, Any]:
    """Images/s of the plain timm-benchmark-style training loop (see the module docstring)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=num_classes)
    model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    dtype = torch.bfloat16
    _reset_peak(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            output = model(images)
            loss = F.cross_entropy(output, labels)
        loss.backward()
        optimizer.step()

    seconds = _time_steps(step, warmup, steps, device)
    return {"images_per_s": batch * steps / seconds, "step_ms": 1000 * seconds / steps,
            "peak_memory_mb": _peak_mb(device), "optimizer": "SGD lr 1e-4"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json")
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--budget-s", type=float, default=170.0, help="stop starting new measurements after this")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    results: dict[str, Any] = {}
    for backbone in args.models:
        row: dict[str, Any] = {}
        for name, fn in (("reference", reference), ("ours", ours)):
            if time.perf_counter() - start > args.budget_s:
                row[name] = {"skipped": f"time budget of {args.budget_s} s spent"}
                continue
            try:
                row[name] = fn(backbone, args.image_size, args.batch_size, args.warmup, args.steps,
                               args.num_classes, device)
            except torch.cuda.OutOfMemoryError as err:
                row[name] = {"error": f"out of memory: {err}"[:300]}
            print(f"{backbone} {name}: {row[name]}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "images_per_s" in row.get("ours", {}) and "images_per_s" in row.get("reference", {}):
            row.update(ours_images_per_s=row["ours"]["images_per_s"],
                       reference_images_per_s=row["reference"]["images_per_s"],
                       ratio=row["ours"]["images_per_s"] / row["reference"]["images_per_s"])
        results[backbone] = row
    payload = {
        "benchmark": "gpu", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
        "settings": {"image_size": args.image_size, "batch_size": args.batch_size, "warmup_steps": args.warmup,
                     "timed_steps": args.steps, "num_classes": args.num_classes, "device": str(device),
                     "precision": "bf16 autocast" if device.type == "cuda" else "fp32 (CPU smoke test)",
                     "memory_format": "channels_last", "data": "synthetic, resident on the device",
                     "ours": "shared.training.train_step (AdamW fused on CUDA, grad clip 1.0, warmup-cosine)",
                     "reference": "minimal timm-benchmark-style loop (SGD); timm's benchmark.py itself is not "
                                  "available offline"},
        "models": results, "wall_seconds": time.perf_counter() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path} in {payload['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
