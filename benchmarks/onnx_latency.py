"""CPU inference, PyTorch vs ONNX Runtime, on the default backbones' servable packages.

``python -m benchmarks.onnx_latency`` writes ``benchmarks/results/onnx_latency.json``. For each case:

* image: ``tf_efficientnet_lite0`` at 128 px (the vision domain's size), ImageNet weights;
* text: ``sentence-transformers/all-MiniLM-L6-v2`` at ``max_length`` 64 (the nlp domain's);

a package is written with :func:`shared.serving.package.save_network` from ``build_model(...,
pretrained=True)`` with a fresh 2-class head (no trained default run exists here; latency does not depend on
the head's values), exported with :func:`shared.serving.onnx.export_onnx` and then timed two ways on the same
model-ready inputs, built once by the scorer's own ``prepare`` (decode + resize, or tokenise + pad to the
longest item of the batch), so preprocessing is outside both timings:

* **pytorch**: the package's classifier, fp32, eval, ``torch.inference_mode``, logits + softmax;
* **onnxruntime**: the exported graph (softmax inside) on ``CPUExecutionProvider`` with as many intra-op
  threads as torch uses.

Both run on ``--threads`` threads (default 1). On a shared 2-core machine that other work keeps busy, two
threads measure the contention more than the backends: torch's OpenMP pool waits on descheduled threads at
every barrier (a first run at two threads, load average 4-6, had PyTorch 12-33x slower than ONNX Runtime at
batch 1, and the same PyTorch forward 10x faster on one thread), so one thread is the default here; on an
idle machine pass ``--threads 2``.

At batch 1 each timed call scores one item (cycling through the items); at batch 32, one batch. Per-item
latency = median call time / batch; throughput = batch / median call time. The two backends are timed in
alternating rounds so that outside load hits both alike. The largest probability difference comes from
:func:`shared.serving.onnx.check_onnx` on the same items. Images are CIFAR-10 from the mirror (PNG-encoded,
as a client would send them), sentences SST-2 from the mirror (synthetic stand-ins without it).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import cifar_images, machine_info, sst2_sentences, write_result
from shared.config import ModelParams
from shared.models import build_model, load_tokenizer
from shared.serving.onnx import check_onnx, export_onnx, network_scorer, onnx_session, session_feed
from shared.serving.package import ModelCard, NetworkScorer, save_network

CASES = (  # (modality, backbone, image size or max_length)
    ("image", "tf_efficientnet_lite0", 128),
    ("text", "sentence-transformers/all-MiniLM-L6-v2", 64),
)
BATCHES = (1, 32)
ITEMS = 64
ROUNDS = 3  # alternating pytorch / onnxruntime rounds
CALLS = {1: 16, 32: 2}  # timed calls per backend per round
WARMUP = 2
THREADS = 1
NOTE = ("shared machine: other processes were running during the run (see load_average); compare the two "
        "backends within this run, not absolute times across runs")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def build_package(folder: Path, modality: str, backbone: str, size: int) -> Path:
    """A network package of ``backbone`` (pretrained weights, a fresh 2-class head) in ``folder``."""
    params = ModelParams.model_validate({"backbone": backbone, "pretrained": True,
                                         ("image_size" if modality == "image" else "max_length"): size})
    torch.manual_seed(0)
    model = build_model(params, modality, 2, pretrained=True)  # type: ignore[arg-type]
    card = ModelCard(domain="bench", regime="full", modality=modality, task="binary",  # type: ignore[arg-type]
                     class_names=["negative", "positive"], kind="network",
                     model=params.model_dump(mode="json", exclude={"weights_file", "extract_batch_size"}))
    save_network(model, folder, card, tokenizer=load_tokenizer(params) if modality == "text" else None)
    return folder


def _call_times(fn: Callable[[Any], Any], batches: list[Any], calls: int) -> list[float]:
    times = []
    for i in range(calls):
        inputs = batches[i % len(batches)]
        t0 = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - t0)
    return times


def time_backends(scorer: NetworkScorer, session: Any, items: list[Any], batch: int) -> dict[str, Any]:
    """Per-item latency and throughput of both backends at ``batch`` on ``items``'s prepared batches."""
    batches = [scorer.prepare(items[s:s + batch], s) for s in range(0, len(items) - batch + 1, batch)]
    feeds = [session_feed(session, b) for b in batches]

    def pytorch(inputs: Any) -> np.ndarray:
        with torch.inference_mode():
            return scorer.model(inputs).softmax(-1).numpy()

    def onnxruntime(index: int) -> np.ndarray:
        return session.run(None, feeds[index])[0]

    runs: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "pytorch": (pytorch, batches), "onnxruntime": (onnxruntime, list(range(len(feeds))))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn, args in runs.values():  # warm-up: oneDNN primitives, ORT's allocator arena
        _call_times(fn, args, WARMUP)
    for r in range(ROUNDS):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            fn, args = runs[name]
            times[name] += _call_times(fn, args, CALLS[batch])
    out: dict[str, Any] = {"batch": batch, "timed_calls": len(times["pytorch"])}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        out[name] = {"per_item_latency_ms": median / batch * 1e3, "throughput_items_per_s": batch / median,
                     "call_seconds": [round(s, 5) for s in seconds]}
    out["onnxruntime_speedup"] = out["pytorch"]["per_item_latency_ms"] / out["onnxruntime"]["per_item_latency_ms"]
    if scorer.card.modality == "text":
        out["mean_padded_tokens"] = float(np.mean([b["input_ids"].shape[1] for b in batches]))
    return out


def case(modality: str, backbone: str, size: int, tmp: Path, n_items: int) -> dict[str, Any]:
    """Export one default backbone and time both backends at each batch size."""
    package = build_package(tmp / modality / "package", modality, backbone, size)
    t0 = time.perf_counter()
    onnx_file = export_onnx(package, tmp / modality / "model.onnx")
    export_s = time.perf_counter() - t0
    if modality == "image":
        images, _, source = cifar_images(n_items)
        items: list[Any] = [_png(image) for image in images]
    else:
        items, _, source = sst2_sentences(n_items)
    threads = torch.get_num_threads()  # run() sets it
    scorer = network_scorer(package)
    session = onnx_session(onnx_file, threads=threads)
    check = check_onnx(package, onnx_file, items, threads=threads)
    return {"modality": modality, "backbone": backbone, ("image_size" if modality == "image" else "max_length"): size,
            "weights": "pretrained backbone, fresh 2-class head", "data": source, "items": len(items),
            "export_seconds": round(export_s, 1), "onnx_megabytes": round(onnx_file.stat().st_size / 2**20, 1),
            "max_abs_prob_diff": check["max_abs_diff"], "threads": threads,
            "batches": [time_backends(scorer, session, items, batch) for batch in BATCHES]}


def run(n_items: int = ITEMS, threads: int = THREADS) -> dict[str, Any]:
    """Every case on ``threads`` torch / ONNX Runtime threads; writes the result file."""
    import onnxruntime

    t0 = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # the result file's machine block (written at the end) shows the threads the timing used
        start = machine_info()
        with tempfile.TemporaryDirectory() as tmp:
            cases = [case(*c, tmp=Path(tmp), n_items=n_items) for c in CASES]
        result = {"settings": {"batches": list(BATCHES), "items": n_items, "rounds": ROUNDS, "calls": CALLS,
                               "warmup_calls": WARMUP, "precision": "fp32", "device": "cpu",
                               "onnxruntime_provider": "CPUExecutionProvider",
                               "torch_threads": threads, "onnxruntime_intra_op_threads": threads,
                               "torch_exporter": "torch.onnx.export(dynamo=True)"},
                  "onnxruntime": onnxruntime.__version__, "note": NOTE,
                  "load_average_at_start": start["load_average"], "cases": cases,
                  "seconds": round(time.perf_counter() - t0, 1)}
        write_result("onnx_latency", result)
    finally:
        torch.set_num_threads(before)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.onnx_latency [--items N] [--threads T]``: one line per case and batch size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=ITEMS, help="items per case (at least 32)")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch and ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    for c in run(max(args.items, max(BATCHES)), args.threads)["cases"]:
        for b in c["batches"]:
            torch_ms, ort_ms = (b[name]["per_item_latency_ms"] for name in ("pytorch", "onnxruntime"))
            print(f"{c['backbone']:40s} batch {b['batch']:2d}  per item: pytorch {torch_ms:.2f} ms, onnxruntime "
                  f"{ort_ms:.2f} ms (x{b['onnxruntime_speedup']:.2f})  max prob diff {c['max_abs_prob_diff']:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
