"""(b) The frozen regime's cost: the probe fit on cached features versus one fine-tuning epoch.

Both on the same images (CIFAR-10 from the mirror, tf_efficientnet_lite0 at 96 px, the vision section's
probe grid). The fine-tuning epoch is timed on a few batches of the shared training step
(``shared.training.forward_loss`` + ``optimizer_step``, regime ``full``, batch 32) and scaled linearly to
the number of training images. Target: probe fit <= 5% of the epoch. The feature extraction that the probe
needs is reported too (it runs once per backbone and is shared with ``lp_ft``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import cifar_images, setup_regime, write_result
from shared.config import load_params
from shared.data.features import extract_features
from shared.data.loaders import make_dataset, make_loader
from shared.data.splits import build_label_map, make_split
from shared.models import WeightsUnavailableError, build_model
from shared.regimes.probe import fit_probe
from shared.training.loop import forward_loss, make_accelerator, make_optimizer, optimizer_step

TARGET = 0.05


def epoch_step_seconds(dp: Any, images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int
                       ) -> tuple[float, list[float]]:
    """Seconds per training step (median of ``steps`` after one warm-up) of the ``full`` regime."""
    model = build_model(dp.model, "image", 10, pretrained=False)
    model, groups = setup_regime(model, "full", dp)
    accelerator = make_accelerator(dp.train, cpu=True)
    optimizer = make_optimizer(groups, accelerator.device)
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    times = []
    for i, batch in enumerate(loader):
        if i > steps:
            break
        t0 = time.perf_counter()
        loss, _, _ = forward_loss(model, batch, accelerator, aux_weight=0.3)
        optimizer_step(model, loss, optimizer, accelerator, grad_clip=dp.train.grad_clip)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def _probe_at(feats: np.ndarray, y: np.ndarray, n: int, dp: Any) -> dict[str, Any]:
    """Fit the probe on the first 3/4 of ``n`` images (validation: the rest); per-C breakdown too."""
    n_train, C_grid, max_iter = n * 3 // 4, dp.regimes["frozen"].C_grid, dp.regimes["frozen"].max_iter
    train, val = (feats[:n_train], y[:n_train]), (feats[n_train:n], y[n_train:n])
    fit_probe(train, val, C_grid[:1], metric="accuracy", max_iter=max_iter, seed=0)  # warm-up (imports, BLAS)
    per_C = {}
    for C in C_grid:
        t0 = time.perf_counter()
        one = fit_probe(train, val, [C], metric="accuracy", max_iter=max_iter, seed=0)
        per_C[str(C)] = {"seconds": time.perf_counter() - t0, "lbfgs_iterations": int(np.max(one.classifier.n_iter_))}
    t0 = time.perf_counter()
    probe = fit_probe(train, val, C_grid, metric="accuracy", max_iter=max_iter, seed=0)
    return {"train_images": n_train, "validation_images": n - n_train, "probe_fit_seconds": time.perf_counter() - t0,
            "probe_C": probe.C, "probe_val_accuracy": probe.val_score, "probe_per_C": per_C}


def _probe_worker(feats: np.ndarray, y: np.ndarray, sizes: tuple[int, ...], queue: Any) -> None:
    """The probe fits in a fresh process, as in the train stage (whose frozen regime runs no torch work):
    in a process that just ran torch, its idle OpenMP threads spin and slow scikit-learn's BLAS several-fold."""
    dp = load_params().domain("vision")
    queue.put({str(n): _probe_at(feats, y, n, dp) for n in sizes})


def run(sizes: tuple[int, ...] = (256, 1024), batch_size: int = 32, steps: int = 5) -> dict[str, Any]:
    """The probe at each size (images: 3/4 train, 1/4 validation) against the epoch on that many images.

    The probe has a large fixed cost (scikit-learn / L-BFGS overhead per iteration) while the epoch scales
    with the images, so the ratio is reported per size; the target is judged at the largest.
    """
    torch.manual_seed(0)
    dp = load_params().domain("vision").model_copy(deep=True)
    dp.model.image_size = 96
    n_images = max(sizes)
    images, labels, source = cifar_images(n_images)
    label_map = build_label_map([f"c{i}" for i in range(10)])
    split = make_split(list(images), labels.tolist(), label_map, modality="image", source="bench")
    try:
        model = build_model(dp.model, "image", 10, pretrained=True)
        weights = "ImageNet (offline package)"
    except WeightsUnavailableError:
        model = build_model(dp.model, "image", 10, pretrained=False)
        weights = "random init (pretrained weights unavailable)"
    model.eval()
    t0 = time.perf_counter()
    dataset = make_dataset(split, model)
    feats, y = extract_features(model, make_loader(dataset, dp.model.extract_batch_size), torch.device("cpu"))
    extract_s = time.perf_counter() - t0

    step_s, step_times = epoch_step_seconds(dp, dataset.images[: 2 * batch_size * (steps + 1)],
                                            dataset.labels[: 2 * batch_size * (steps + 1)], batch_size, steps)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_probe_worker, args=(feats, y, tuple(sizes), queue))
    proc.start()
    probes = queue.get(timeout=600)
    proc.join()
    by_size = {}
    for n in sizes:
        row = probes[str(n)]
        epoch_s = step_s * row["train_images"] / batch_size
        row.update(finetune_epoch_seconds_estimate=epoch_s, ratio_probe_to_epoch=row["probe_fit_seconds"] / epoch_s,
                   feature_extraction_seconds_estimate=extract_s * n / n_images)
        row["ratio_probe_plus_extraction_to_epoch"] = (row["probe_fit_seconds"]
                                                       + row["feature_extraction_seconds_estimate"]) / epoch_s
        by_size[str(n)] = row
    main = by_size[str(n_images)]
    result = {
        "settings": {"backbone": dp.model.backbone, "image_size": 96, "data": source, "weights": weights,
                     "sizes": list(sizes), "C_grid": dp.regimes["frozen"].C_grid,
                     "max_iter": dp.regimes["frozen"].max_iter, "finetune_regime": "full",
                     "probe_process": "spawned, like the train stage's frozen regime (no torch work before)",
                     "finetune_batch_size": batch_size, "timed_steps": steps, "device": "cpu",
                     "epoch_estimate": "median step time x train images / batch size (linear scaling)"},
        "feature_extraction_seconds": extract_s, "feature_extraction_images": n_images,
        "finetune_step_seconds": step_times, "by_size": by_size,
        "train_images": main["train_images"], "probe_fit_seconds": main["probe_fit_seconds"],
        "finetune_epoch_seconds_estimate": main["finetune_epoch_seconds_estimate"],
        "ratio_probe_to_epoch": main["ratio_probe_to_epoch"],
        "ratio_probe_plus_extraction_to_epoch": main["ratio_probe_plus_extraction_to_epoch"],
        "target": TARGET, "meets_target": main["ratio_probe_to_epoch"] <= TARGET,
    }
    write_result("frozen", result)
    return result
