"""fp32 vs bf16 autocast vs ``auto`` on the CPU for every default backbone at the domains' input sizes.

For each case (EfficientNet-Lite0 at the image domains' sizes, MiniLM-L6 at the text domains' lengths,
real pretrained weights, all parameters trainable): the seconds of the fastest training step (AdamW, batch of
the domain's ``train.batch_size``), of an extraction forward (the frozen features, ``extract_batch_size``)
and of an evaluation forward (logits, twice the batch; median of 3), in fp32 and in bf16 autocast, and what
``train.precision: auto`` (:func:`shared.training.precision.choose_precision`) picks from its own timing.
Writes ``benchmarks/results/precision.json`` with the CPU model and its bf16 flags.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine_info, write_result
from shared.config import ModelParams
from shared.models import build_model, load_tokenizer
from shared.training.precision import BF16_FLAGS, choose_precision, cpu_flags, step_seconds

IMAGE = "tf_efficientnet_lite0"
TEXT = "sentence-transformers/all-MiniLM-L6-v2"
CASES = (  # (domain, backbone, image size or tokens, train batch, extract batch) as in params.yaml
    ("vision", IMAGE, 128, 32, 128), ("xray", IMAGE, 64, 32, 128), ("dermatology", IMAGE, 96, 32, 64),
    ("nlp", TEXT, 64, 32, 256), ("ehr", TEXT, 128, 16, 64),
)
REPEATS = 3


def _inputs(model: Any, params: ModelParams, size: int, batch: int) -> Any:
    gen = torch.Generator().manual_seed(0)
    if model.modality == "image":
        return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)
    tokenizer = load_tokenizer(params)
    text = " ".join(["the patient was seen today and the plan was discussed"] * size)
    return dict(tokenizer([text] * batch, truncation=True, max_length=size, padding="max_length",
                          return_tensors="pt"))


@torch.no_grad()
def _forward_seconds(fn: Any, inputs: Any, bf16: bool) -> float:
    times = []
    for _ in range(REPEATS + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            fn(inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def case(domain: str, backbone: str, size: int, batch: int, extract_batch: int) -> dict[str, Any]:
    """One backbone at one input size: train / extract / evaluate seconds per batch in each precision."""
    modality = "image" if backbone == IMAGE else "text"
    params = ModelParams(backbone=backbone, **({"image_size": size} if modality == "image" else {"max_length": size}))
    torch.manual_seed(0)
    model = build_model(params, modality, 2, pretrained=True)
    model.eval()
    out: dict[str, Any] = {"domain": domain, "backbone": backbone, "size": size, "batch": batch}
    train_x, labels = _inputs(model, params, size, batch), torch.tensor([i % 2 for i in range(batch)])
    extract_x, eval_x = _inputs(model, params, size, extract_batch), _inputs(model, params, size, 2 * batch)
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        out[f"train_step_s_{precision}"] = step_seconds(model, train_x, labels, bf16)
        out[f"extract_batch_s_{precision}"] = _forward_seconds(model.features, extract_x, bf16)
        out[f"eval_batch_s_{precision}"] = _forward_seconds(model, eval_x, bf16)
    for stage in ("train_step", "extract_batch", "eval_batch"):
        out[f"{stage}_bf16_speedup"] = out[f"{stage}_s_fp32"] / out[f"{stage}_s_bf16"]
    with tempfile.TemporaryDirectory() as tmp:
        choice = choose_precision("auto", device=torch.device("cpu"), model=model, batch=lambda: (train_x, labels),
                                  key={"backbone": backbone, "size": size}, cache=Path(tmp) / "p.json")
    out["auto"] = choice.record()
    return out


def run() -> dict[str, Any]:
    """Every case; the result file."""
    t0 = time.perf_counter()
    flags = sorted(f for f in BF16_FLAGS if f in cpu_flags())
    results = {"machine": {**machine_info(), "bf16_flags": flags}, "cases": [case(*c) for c in CASES]}
    results["seconds"] = time.perf_counter() - t0
    write_result("precision", results)
    return results


if __name__ == "__main__":
    for row in run()["cases"]:
        print(f"{row['domain']:12s} {row['size']:4d}  train x{row['train_step_bf16_speedup']:.2f}  "
              f"extract x{row['extract_batch_bf16_speedup']:.2f}  eval x{row['eval_batch_bf16_speedup']:.2f}  "
              f"auto -> {row['auto']['precision']}")
