"""Stage ``train@DOMAIN-REGIME``: fit one regime, keep the best-validation weights, and write
validation/test probabilities for ``evaluate``. One MLflow run per (domain, regime).

Runs unchanged on several processes (DDP)::

    accelerate launch --multi_gpu --num_processes 2 -m pipelines.train --domain vision --regime full

(on a machine without CUDA this trains on the CPU with the gloo backend; ``torchrun --nproc_per_node 2 -m
pipelines.train ...`` does the same). Every process trains; only the main one opens the MLflow run, logs,
and writes the stage's outputs. Regimes that fit scikit-learn models (frozen, baseline) run on the main
process alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import DatasetDict, load_from_disk

from pipelines.common import Stage, parse_stage, run_main, staged_output
from shared import paths
from shared.atomic import write_json, write_safetensors
from shared.backbones import aux_loss_weight, build_model, load_tokenizer
from shared.checkpoint import seed_everything
from shared.config import DomainParams
from shared.data import make_dataset, make_loader
from shared.features import FeatureCache, Probe, fit_probe
from shared.predictions import Predictions
from shared.regimes import count_parameters, get_regime, init_head_from_probe, setup_regime
from shared.tracking import init_store, log_metrics, tracked_run
from shared.training import distributed_state, fit, make_accelerator, peak_memory_mb, predict, use_channels_last


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (C * count_c)`` (scikit-learn's 'balanced')."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))


def probe_on_cache(stage: Stage, C_grid: list[float], max_iter: int) -> tuple[Probe, FeatureCache]:
    """Fit the frozen probe on the cached features (class_weight follows ``train.loss_weighting``)."""
    cache = FeatureCache(paths.features_dir(stage.domain.name), stage.dp.model)
    weighting = None if stage.dp.train.loss_weighting == "plain" else "balanced"
    probe = fit_probe(cache.read("train"), cache.read("validation"), C_grid, max_iter=max_iter,
                      seed=stage.params.seed, class_weight=weighting)
    return probe, cache


def train_frozen(stage: Stage, out: Path) -> tuple[Predictions, dict[str, Any]]:
    """Logistic regression on cached frozen features."""
    cfg = stage.dp.regimes.frozen
    t0 = time.perf_counter()
    probe, cache = probe_on_cache(stage, cfg.C_grid, cfg.max_iter)
    seconds = time.perf_counter() - t0
    n_train = len(cache.read("train")[1])
    (x_val, y_val), (x_test, y_test) = cache.read("validation"), cache.read("test")
    coef, intercept = probe.raw_weights()
    write_safetensors(out / "weights.safetensors", {"weight": np.ascontiguousarray(coef, dtype=np.float32),
                                                    "bias": np.ascontiguousarray(intercept, dtype=np.float32)})
    preds = Predictions(probe.predict_proba(x_val), y_val, probe.predict_proba(x_test), y_test)
    trainable = coef.size + intercept.size
    return preds, {"trainable_params": int(trainable), "total_params": int(trainable), "probe_C": probe.C,
                   "val_score": probe.val_score, "train_seconds": seconds,
                   "train_samples_per_second": n_train * len(cfg.C_grid) / seconds,
                   "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}


def train_baseline(stage: Stage, dd: DatasetDict, out: Path) -> tuple[Predictions, dict[str, Any]]:
    """TF-IDF (text) or raw pixels (images) + logistic regression."""
    from shared.baseline import fit_baseline

    weighting = None if stage.dp.train.loss_weighting == "plain" else "balanced"
    t0 = time.perf_counter()
    val_probs, test_probs = fit_baseline(dd, stage.domain.modality, stage.dp.regimes.baseline,
                                         stage.params.seed, weighting)
    seconds = time.perf_counter() - t0
    labels = {s: np.asarray(dd[s]["label"], dtype=np.int64) for s in ("validation", "test")}
    return Predictions(val_probs, labels["validation"], test_probs, labels["test"]), {
        "train_seconds": seconds, "train_samples_per_second": len(dd["train"]) / seconds,
        "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}


def checkpoint_dir(stage: Stage) -> Path:
    """Resumable checkpoints, keyed by everything the run depends on (so stale ones are never resumed)."""
    dp: DomainParams = stage.dp
    key = json.dumps({"seed": stage.params.seed, "model": dp.model.model_dump(), "data": dp.data.model_dump(),
                      "train": dp.train_for(stage.regime or "").model_dump(),
                      "regime": getattr(dp.regimes, stage.regime or "").model_dump()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return paths.checkpoint_dir(stage.domain.name, stage.regime or "") / digest


def train_network(stage: Stage, dd: DatasetDict, out: Path | None,
                  checkpoints: Path | None = None) -> tuple[Predictions, dict[str, Any]]:
    """scratch / partial / full / lora / lp_ft through the shared training loop.

    Every process of a DDP launch runs this; only the main one (``out`` given) writes weights.
    ``checkpoints`` is the resumable-checkpoint folder (default: :func:`checkpoint_dir` of the stage).
    """
    regime, dp = stage.regime or "", stage.dp
    train = dp.train_for(regime)
    train = train.model_copy(update={"aux_loss_weight": aux_loss_weight(dp.model.backbone, train.aux_loss_weight)})
    generator = seed_everything(stage.params.seed, deterministic=train.deterministic)
    num_classes = dd["train"].features["label"].num_classes
    model = build_model(dp.model, stage.domain.modality, num_classes, pretrained=get_regime(regime).pretrained,
                        aux_logits=train.aux_loss_weight is not None)
    tokenizer = load_tokenizer(dp.model) if stage.domain.modality == "text" else None
    datasets = {s: make_dataset(dd[s], model, tokenizer=tokenizer, max_length=dp.model.max_length,
                                augment=(s == "train"), sort_by_length=(s != "train"))
                for s in ("train", "validation", "test")}
    info: dict[str, Any] = {}
    if regime == "lp_ft":
        probe, _ = probe_on_cache(stage, dp.regimes.lp_ft.probe.C_grid, dp.regimes.lp_ft.probe.max_iter)
        init_head_from_probe(model.head, *probe.raw_weights())
        info["probe_C"] = probe.C
    model, groups = setup_regime(model, regime, dp)
    labels = np.asarray(dd["train"]["label"], dtype=np.int64)
    weights = class_weights(labels, num_classes)
    sample_weights = torch.as_tensor(weights[labels]) if train.loss_weighting == "balanced_sampling" else None
    loss_weights = torch.as_tensor(weights, dtype=torch.float32) if train.loss_weighting == "class_weighted" else None
    accelerator = make_accelerator(train)
    loader_kw = {"tokenizer": tokenizer, "num_workers": train.num_workers,
                 "pin_memory": accelerator.device.type == "cuda"}
    train_loader = make_loader(datasets["train"], train.batch_size, shuffle=True, generator=generator,
                               group_by_length=train.group_by_length,
                               sample_weights=sample_weights, **loader_kw)
    val_loader = make_loader(datasets["validation"], train.batch_size * 2, **loader_kw)
    test_loader = accelerator.prepare(make_loader(datasets["test"], train.batch_size * 2, **loader_kw))

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        log_metrics(record, step=epoch)

    ckpt = checkpoints or checkpoint_dir(stage)
    result = fit(model, groups, train_loader, val_loader, train, accelerator=accelerator,
                 class_weights=loss_weights, checkpoint_dir=ckpt, on_epoch=on_epoch, generator=generator,
                 seed=stage.params.seed)
    channels_last = use_channels_last(train, model, accelerator.device)
    val_probs, val_labels = result.best_val_probs, result.best_val_labels  # the best epoch's, as scored
    if val_probs is None:  # no epoch beat the initial score (NaN scores), or an old checkpoint
        val_loader = accelerator.prepare(make_loader(datasets["validation"], train.batch_size * 2, **loader_kw))
        val_probs, val_labels, _ = predict(model, val_loader, accelerator, channels_last)
    test_probs, test_labels, _ = predict(model, test_loader, accelerator, channels_last)
    model = accelerator.unwrap_model(model)
    trainable, total = count_parameters(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    kept = {k: v.contiguous() for k, v in result.best_state.items() if k in names}
    if out is not None and accelerator.is_main_process:
        write_safetensors(out / "weights.safetensors", kept, metadata={"regime": regime, "contents":
                                                                       "trainable parameters and buffers"})
    accelerator.wait_for_everyone()  # nobody still reads the checkpoints
    if accelerator.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    info.update(trainable_params=trainable, total_params=total, train_seconds=result.train_seconds,
                train_samples_per_second=result.samples_per_second, peak_memory_mb=result.peak_memory_mb,
                best_epoch=result.best_epoch + 1, epochs_run=len(result.history), history=result.history,
                device=str(accelerator.device), processes=accelerator.num_processes)
    return Predictions(val_probs, val_labels, test_probs, test_labels), info


def main(argv: list[str] | None = None) -> int:
    """Run the stage (on every process of a multi-process launch; see the module docstring)."""
    stage = parse_stage(argv, __doc__ or "", with_regime=True)
    regime, name = stage.regime or "", stage.domain.name
    state = distributed_state()
    if not state.is_main_process:
        if get_regime(regime).trains_network:
            train_network(stage, load_from_disk(str(paths.prepared_dir(name))), None)
        return 0  # the main process logs and writes everything
    dd = load_from_disk(str(paths.prepared_dir(name)))
    init_store([name])
    with staged_output(paths.model_dir(name, regime)) as out, tracked_run(
        name, f"{name}-{regime}", tags=stage.tags("train"),
        params={"seed": stage.params.seed, "regime": regime, **stage.dp.model_dump(exclude={"regimes"}),
                "regimes": {regime: getattr(stage.dp.regimes, regime).model_dump()}},
    ) as run:
        if regime == "frozen":
            preds, info = train_frozen(stage, out)
        elif regime == "baseline":
            preds, info = train_baseline(stage, dd, out)
        else:
            preds, info = train_network(stage, dd, out)
        preds.save(out / "predictions.safetensors")
        info.setdefault("train_seconds", 0.0)
        write_json(out / "run.json", {"run_id": run.info.run_id, "domain": name, "regime": regime, **info})
    return 0


if __name__ == "__main__":
    run_main(main)
