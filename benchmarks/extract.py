"""(a) Feature extraction: the extract stage's code path versus the bare model forward.

The path is what ``pipelines/extract.py`` runs per split: ``shared.data.loaders.make_dataset`` (decode + resize, or
tokenise and sort by length), ``make_loader`` and ``shared.data.features.extract_features``. The reference is
``model.features`` on inputs already in memory as model-ready tensors (uint8 images at the backbone
resolution; token ids padded per batch exactly as the collator does), same batch size, same model, eval
mode, no grad. Target: the path reaches >= 0.9 of the bare items/s.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import best_of, cifar_images, sst2_sentences, write_result
from shared.config import ModelParams
from shared.data.features import extract_features
from shared.data.loaders import make_dataset, make_loader, split_batch
from shared.data.splits import build_label_map, make_split
from shared.models import build_model, load_tokenizer

TARGET = 0.9


def _bare(model: torch.nn.Module, batches: list[Any]) -> None:
    model.eval()
    with torch.no_grad():
        for inputs in batches:
            model.features(inputs).float().cpu().numpy()


def _measure(model: torch.nn.Module, split: Any, batch_size: int, repeats: int, tokenizer: Any = None,
             max_length: int | None = None) -> dict[str, Any]:
    device = torch.device("cpu")
    result: dict[str, Any] = {}

    def path() -> np.ndarray:
        t0 = time.perf_counter()
        dataset = make_dataset(split, model, tokenizer=tokenizer, max_length=max_length, sort_by_length=True)
        result["make_dataset_s"] = min(result.get("make_dataset_s", np.inf), time.perf_counter() - t0)
        loader = make_loader(dataset, batch_size, tokenizer=tokenizer)
        t1 = time.perf_counter()
        feats, _ = extract_features(model, loader, device)
        result["loader_and_extract_s"] = min(result.get("loader_and_extract_s", np.inf), time.perf_counter() - t1)
        return feats

    # model-ready inputs in memory: the same batches the loader yields, built once, outside the timing
    loader = make_loader(make_dataset(split, model, tokenizer=tokenizer, max_length=max_length,
                                      sort_by_length=True), batch_size, tokenizer=tokenizer)
    batches = [split_batch(b)[0] for b in loader]
    t0 = time.perf_counter()
    for _ in loader:  # the loader alone: indexing + collate (+ padding for text), no model
        pass
    result["loader_only_s"] = time.perf_counter() - t0
    _bare(model, batches[:1])  # warm-up (oneDNN primitive creation, allocator)
    path_times, bare_times, path_cpu, bare_cpu = [], [], [], []
    for i in range(repeats):  # interleaved, alternating which goes first, so outside load hits both
        order = [("path", path), ("bare", lambda: _bare(model, batches))]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            c0 = time.process_time()
            (path_times if name == "path" else bare_times).append(best_of(1, fn)[0])
            (path_cpu if name == "path" else bare_cpu).append(time.process_time() - c0)
    n = len(split)
    path_rate, bare_rate = n / min(path_times), n / min(bare_times)
    result.update(items=n, batch_size=batch_size, repeats=repeats, path_seconds=path_times,
                  bare_seconds=bare_times, path_items_per_s=path_rate, bare_items_per_s=bare_rate,
                  ratio=path_rate / bare_rate, path_cpu_seconds=path_cpu, bare_cpu_seconds=bare_cpu,
                  ratio_cpu_time=min(bare_cpu) / min(path_cpu),
                  ratio_excluding_make_dataset=n / result["loader_and_extract_s"] / bare_rate,
                  ratio_expected_from_overheads=min(bare_times) / (min(bare_times) + result["loader_only_s"]
                                                                   + result["make_dataset_s"]),
                  target=TARGET, meets_target=path_rate / bare_rate >= TARGET)
    return result


def run(n_images: int = 256, n_sentences: int = 128, repeats: int = 4) -> dict[str, Any]:
    """Vision (tf_efficientnet_lite0, 96 px, batch 128) and text (MiniLM, max_length 64, batch 64).

    The defaults (256 images, 128 sentences, 4 interleaved repeats) keep it near a minute on a loaded
    2-core CPU; on an idle machine pass ``--extract-images 512 --extract-sentences 512``. Wall time is
    judged on the fastest repeat; process CPU time (less sensitive to other processes) is reported too.
    """
    torch.manual_seed(0)
    out: dict[str, Any] = {}

    images, labels, source = cifar_images(n_images)
    label_map = build_label_map([f"c{i}" for i in range(10)])
    split = make_split(list(images), labels.tolist(), label_map, modality="image", source="bench")
    params = ModelParams(backbone="tf_efficientnet_lite0", pretrained=False, image_size=96)
    model = build_model(params, "image", 10, pretrained=False)
    out["vision"] = {"backbone": params.backbone, "image_size": 96, "data": source,
                     "weights": "random init (speed does not depend on the weights)",
                     **_measure(model, split, 128, repeats)}

    texts, text_labels, text_source = sst2_sentences(n_sentences)
    split = make_split(texts, text_labels.tolist(), build_label_map(["negative", "positive"]), modality="text",
                       source="bench")
    params = ModelParams(backbone="sentence-transformers/all-MiniLM-L6-v2", max_length=64)
    model = build_model(params, "text", 2, pretrained=True)
    tokenizer = load_tokenizer(params)
    out["text"] = {"backbone": params.backbone, "max_length": 64, "data": text_source,
                   **_measure(model, split, 64, repeats, tokenizer=tokenizer, max_length=64)}
    write_result("extract", {"settings": {"n_images": n_images, "n_sentences": n_sentences, "repeats": repeats,
                                          "device": "cpu"}, **out})
    return out
