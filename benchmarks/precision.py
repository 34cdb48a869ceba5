"""fp32 vs bf16 autocast vs ``auto`` on the CPU for every default backbone at the domains' input sizes.

For each case (EfficientNet-Lite0 at the image domains' sizes, MiniLM-L6 at the text domains' lengths,
real pretrained weights, all parameters trainable): the seconds of a training step (AdamW, batch of the
domain's ``train.batch_size``), of an extraction forward (the frozen features, ``extract_batch_size``) and
of an evaluation forward (logits, twice the batch), in fp32 and in bf16 autocast (an image model's bf16
forward passes channels-last, as the stages run them; each the median of 3 of the timings ``auto`` uses,
which alternate the precisions and keep the fastest of 3 steps after a warm-up), and for each phase what ``auto``
(:func:`shared.training.precision.choose_precision`; ``train.precision``, ``model.extract_precision``,
``train.eval_precision``) picks from its own alternating timing, with the seconds of its pick.
Then the machine's other levers (:func:`levers`: ``channels_last``, math threads, data-loader workers,
``torch.compile``), and what bounds bf16's gain (:func:`ceiling`). Writes ``benchmarks/results/precision.json``
with the CPU model and its bf16 flags.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from benchmarks.common import cifar_images, machine_info, write_result
from shared.config import ModelParams
from shared.data.loaders import make_dataset, make_loader, split_batch
from shared.models import build_model, load_tokenizer
from shared.training.precision import (
    BF16_FLAGS,
    Precision,
    choose_precision,
    cpu_flags,
    forward_seconds,
    step_seconds,
)

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
    phases = {  # phase: (timer, what it runs, its batch)
        "train_step": (step_seconds, model, train_x),
        "extract_batch": (forward_seconds, model.features, extract_x),
        "eval_batch": (forward_seconds, model, eval_x),
    }
    for phase, (timer, fn, inputs) in phases.items():
        model.train(phase == "train_step")
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(REPEATS):  # each timing alternates the precisions, so that load from elsewhere hits both
            for precision, seconds in timer(fn, inputs, labels, ("fp32", "bf16")).items():
                times[precision].append(seconds)
        for name, values in times.items():
            out[f"{phase}_s_{name}"] = statistics.median(values)
        out[f"{phase}_bf16_speedup"] = out[f"{phase}_s_fp32"] / out[f"{phase}_s_bf16"]
        with tempfile.TemporaryDirectory() as tmp:  # what auto picks from its own (alternating) timing
            choice = choose_precision("auto", device=torch.device("cpu"), model=fn, timer=timer,
                                      batch=lambda inputs=inputs: (inputs, labels),  # labels: train only
                                      key={"phase": phase, "backbone": backbone, "size": size},
                                      cache=Path(tmp) / "p.json")
        out[f"{phase}_auto"] = choice.record()
        out[f"{phase}_s_auto"] = out[f"{phase}_s_{choice.precision}"]
    model.eval()
    return out


def _loop_seconds(model: Any, loader: Any, bf16: bool, steps: int, train: bool = True) -> float:
    """Seconds of ``steps`` batches of ``loader`` (after one warm-up batch): training steps (AdamW, on a copy)
    or, with ``train`` false, only the loader's own work."""
    trial = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trial.parameters(), lr=1e-6)
    batches = iter(loader)
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        inputs, labels = split_batch(next(batches))
        if train:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = trial(inputs)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _alternated(fns: dict[str, Any]) -> dict[str, float]:
    """The median of :data:`REPEATS` timings of each function, alternated."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(values) for name, values in times.items()}


def levers(bf16: bool) -> dict[str, Any]:
    """The machine's other levers, each timed against the default (medians of alternated timings):
    ``channels_last`` for EfficientNet-Lite0 at 128 px (training step and extraction forward); 1 vs 2 math
    threads (training step of each default backbone); data-loader workers 0 vs 1 (a real training loop on
    decoded, augmented CIFAR images, and the loader alone); ``torch.compile`` of MiniLM-L6's training step
    (first step with compilation, steady step, and the steps it needs to pay the compilation back beside
    the steps of the nlp train stage). ``bf16``: the precision ``auto`` uses for text on this machine."""
    from datasets import Dataset, Features, Image, Value

    out: dict[str, Any] = {}
    torch.manual_seed(0)
    image_params = ModelParams(backbone=IMAGE, image_size=128)
    image = build_model(image_params, "image", 10, pretrained=True)
    x, labels = _inputs(image, image_params, 128, 32), torch.tensor([i % 10 for i in range(32)])
    extract_x = _inputs(image, image_params, 128, 128)
    cl_model = copy.deepcopy(image).to(memory_format=torch.channels_last)
    cl_x = x.contiguous(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16"):
        image.eval(), cl_model.eval()
        out[f"channels_last_extract_{precision}"] = _alternated({  # the layout forced either way
            layout: lambda p=precision, c=layout == "channels_last":
                forward_seconds(image.features, extract_x, labels, (p,), channels_last=c)[p]
            for layout in ("default", "channels_last")})
        out[f"channels_last_train_{precision}"] = _alternated({
            "default": lambda p=precision: step_seconds(image, x, labels, (p,))[p],
            "channels_last": lambda p=precision: step_seconds(cl_model, cl_x, labels, (p,))[p]})
    text_params = ModelParams(backbone=TEXT, max_length=64)
    text = build_model(text_params, "text", 2, pretrained=True)
    text_x, text_labels = _inputs(text, text_params, 64, 32), torch.tensor([i % 2 for i in range(32)])
    threads = torch.get_num_threads()
    text_precision: Precision = "bf16" if bf16 else "fp32"

    def with_threads(n: int, fn: Any) -> float:
        torch.set_num_threads(n)
        try:
            return float(fn())
        finally:
            torch.set_num_threads(threads)

    out["threads_default"] = threads
    out["threads_train_image_fp32"] = _alternated({
        str(n): lambda n=n: with_threads(n, lambda: step_seconds(image, x, labels)["fp32"]) for n in (1, threads)})
    out["threads_train_text"] = _alternated({
        str(n): lambda n=n: with_threads(n, lambda: step_seconds(text, text_x, text_labels, (text_precision,))[
            text_precision]) for n in (1, threads)})
    pixels, classes, source = cifar_images(32 * 13)
    split = Dataset.from_dict({"image": [PILImage.fromarray(a) for a in pixels], "label": classes.tolist()},
                              features=Features({"image": Image(), "label": Value("int64")}))
    dataset = make_dataset(split, image, augment=True)
    loaders = {w: make_loader(dataset, 32, shuffle=True, generator=torch.Generator().manual_seed(0), num_workers=w)
               for w in (0, 1)}
    out["loader_source"] = source
    out["workers_train_12_steps_fp32"] = _alternated({str(w): lambda w=w: _loop_seconds(image, loaders[w], False, 12)
                                                      for w in (0, 1)})
    out["loader_alone_12_batches"] = _loop_seconds(image, loaders[0], False, 12, train=False)
    compiled: Any = torch.compile(copy.deepcopy(text))
    t0 = time.perf_counter()
    step_seconds(compiled, text_x, text_labels, (text_precision,), steps=1)  # the first step compiles fwd + bwd
    out["compile_first_two_steps_s"] = time.perf_counter() - t0
    steady = _alternated({"eager": lambda: step_seconds(text, text_x, text_labels, (text_precision,))[text_precision],
                          "compiled": lambda: step_seconds(compiled, text_x, text_labels, (text_precision,))[
                              text_precision]})
    out["compile_step_s"] = steady
    saved = steady["eager"] - steady["compiled"]
    extra = out["compile_first_two_steps_s"] - 2 * steady["compiled"]  # compilation beyond two compiled steps
    out["compile_payback_steps"] = extra / saved if saved > 0 else None
    out["nlp_train_stage_steps"] = 2 * -(-6000 // 32)  # 2 epochs of 6000 sentences at batch 32 (params.yaml)
    out["compile_precision"] = text_precision
    return out


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def ceiling() -> dict[str, Any]:
    """What bounds bf16's gain on this CPU: the bf16/fp32 ratio of a plain matrix product at MiniLM-L6's
    shapes for the nlp batch (2048 tokens x 384 x 1536 and back; the fastest of 20 after 3 warm-ups), and
    where a MiniLM-L6 training step (nlp: batch 32, 64 tokens) spends its time in each precision, from
    ``torch.profiler`` over two steps after two warm-ups: matrix products, dropout's random masks
    (``aten::bernoulli_``, fp32 either way), the AdamW update, and the rest."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    for m, k, n in ((2048, 384, 1536), (2048, 1536, 384)):
        a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
        row: dict[str, float] = {}
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            x, y = a.to(dtype), b.to(dtype)
            times = []
            for _ in range(23):
                t0 = time.perf_counter()
                torch.mm(x, y)
                times.append(time.perf_counter() - t0)
            row[f"gflops_{precision}"] = 2 * m * k * n / min(times[3:]) / 1e9
        row["bf16_speedup"] = row["gflops_bf16"] / row["gflops_fp32"]
        out[f"matmul_{m}x{k}x{n}"] = row
    params = ModelParams(backbone=TEXT, max_length=64)
    torch.manual_seed(0)
    model = build_model(params, "text", 2, pretrained=True).train()
    x, labels = _inputs(model, params, 64, 32), torch.tensor([i % 2 for i in range(32)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for precision in ("fp32", "bf16"):
        for _ in range(2):
            step(precision == "bf16")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step(precision == "bf16")
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        parts = {"matmul": sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS),
                 "dropout_rng": sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_"),
                 "adamw": sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#AdamW"))}
        parts["other"] = total - sum(parts.values())
        out[f"nlp_train_step_{precision}"] = {"step_seconds": total / 2 / 1e6,
                                              **{f"{k}_seconds": v / 2 / 1e6 for k, v in parts.items()}}
    fp32, bf16 = out["nlp_train_step_fp32"], out["nlp_train_step_bf16"]
    out["nlp_train_step_bf16_speedup"] = fp32["step_seconds"] / bf16["step_seconds"]
    out["nlp_train_step_matmul_bf16_speedup"] = fp32["matmul_seconds"] / bf16["matmul_seconds"]
    return out


def run(name: str = "precision") -> dict[str, Any]:
    """Every case and the other levers; the result file ``benchmarks/results/<name>.json``."""
    t0 = time.perf_counter()
    flags = sorted(f for f in BF16_FLAGS if f in cpu_flags())
    results = {"machine": {**machine_info(), "bf16_flags": flags}, "cases": [case(*c) for c in CASES],
               "levers": levers(bf16=bool(flags)), "ceiling": ceiling()}
    results["seconds"] = time.perf_counter() - t0
    write_result(name, results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="precision", help="result file name (say, one per machine)")
    for row in run(parser.parse_args().name)["cases"]:
        print(f"{row['domain']:12s} {row['size']:4d}  " + "  ".join(
            f"{phase.split('_')[0]} x{row[f'{phase}_bf16_speedup']:.2f} auto {row[f'{phase}_auto']['precision']}"
            for phase in ("train_step", "extract_batch", "eval_batch")))
