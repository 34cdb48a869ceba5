"""One regime run on one domain: build the model, let the regime prepare it, train it through the shared
loop (or let the regime fit on its own), and return validation/test predictions with what was measured.

The train stage, the CLI and the data-efficiency sweep all call :func:`run_regime`.

Under DDP every process runs :func:`train_network`; only the main one (``out`` given) writes weights.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.data.loaders import make_dataset, make_loader, timing_batch
from shared.evaluation.predictions import Predictions
from shared.files.atomic import write_safetensors
from shared.models import aux_loss_weight, build_model, load_tokenizer
from shared.regimes.base import PACKAGE, FittedRegime, NetworkRegime, Regime, RegimeContext
from shared.regimes.finetune import count_parameters
from shared.tracking import log_metrics
from shared.training.callbacks import Callback, Checkpointing, LogEpochs
from shared.training.checkpoint import seed_everything
from shared.training.loop import fit, make_accelerator, predict, training_device
from shared.training.precision import (
    choose_precision,
    forward_layouts,
    forward_seconds,
    model_signature,
    to_memory_format,
    use_channels_last,
)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (C * count_c)`` (scikit-learn's 'balanced')."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))


def train_network(regime: NetworkRegime[Any], ctx: RegimeContext, out: Path | None
                  ) -> tuple[Predictions, dict[str, Any]]:
    """Build the domain's model, let ``regime`` prepare it, train it, and predict validation and test.

    ``out`` receives ``weights.safetensors`` (the trainable parameters and buffers of the best epoch: for
    an adapter, the adapter alone) and, when ``ctx.card`` is set, the servable package (the complete
    model, an adapter merged); ``None`` on the non-main processes of a DDP launch.
    """
    dp, modality = ctx.params, ctx.domain.modality
    train = regime.train_params(dp)
    train = train.model_copy(update={"aux_loss_weight": aux_loss_weight(dp.model.backbone, train.aux_loss_weight)})
    generator = seed_everything(ctx.seed, deterministic=train.deterministic)
    splits = ctx.splits()
    num_classes = splits["train"].features["label"].num_classes
    model = build_model(dp.model, modality, num_classes, pretrained=regime.pretrained,
                        aux_logits=train.aux_loss_weight is not None)
    tokenizer = load_tokenizer(dp.model) if modality == "text" else None
    datasets = {s: make_dataset(splits[s], model, tokenizer=tokenizer, max_length=dp.model.max_length,
                                augment=(s == "train"), sort_by_length=(s != "train"))
                for s in ("train", "validation", "test")}
    prepared = regime.prepare(model, ctx)
    network = prepared.model  # the model itself, or a wrapper (PEFT) around it
    labels = np.asarray(splits["train"]["label"], dtype=np.int64)
    weights = class_weights(labels, num_classes)
    sample_weights = torch.as_tensor(weights[labels]) if train.loss_weighting == "balanced_sampling" else None
    loss_weights = torch.as_tensor(weights, dtype=torch.float32) if train.loss_weighting == "class_weighted" else None
    # ``auto`` times the layout that trains
    timed_layout = use_channels_last(train.channels_last, network, training_device())

    def train_batch() -> tuple[Any, torch.Tensor]:  # what ``auto`` times: a batch of the train split
        inputs, labels = timing_batch(make_loader(datasets["train"], train.batch_size, tokenizer=tokenizer))
        return to_memory_format(inputs, timed_layout), labels

    if timed_layout:
        network.to(memory_format=torch.channels_last)
    precision = choose_precision(train.precision, device=training_device(), model=network, batch=train_batch,
                                 key={"backbone": dp.model.name, **model_signature(network),
                                      "image_size": dp.model.image_size, "max_length": dp.model.max_length,
                                      "batch_size": train.batch_size, "channels_last": timed_layout})
    accelerator = make_accelerator(train, precision=precision.precision)
    loader_kw = {"tokenizer": tokenizer, "num_workers": train.num_workers,
                 "pin_memory": accelerator.device.type == "cuda"}
    train_loader = make_loader(datasets["train"], train.batch_size, shuffle=True, generator=generator,
                               group_by_length=train.group_by_length, sample_weights=sample_weights, **loader_kw)
    val_loader = make_loader(datasets["validation"], train.batch_size * 2, **loader_kw)
    test_loader = accelerator.prepare(make_loader(datasets["test"], train.batch_size * 2, **loader_kw))
    callbacks: list[Callback] = [] if ctx.checkpoints is None else [Checkpointing(ctx.checkpoints)]
    callbacks.append(LogEpochs(lambda record, epoch: log_metrics(record, step=epoch)))
    result = fit(network, prepared.param_groups, train_loader, val_loader, train, accelerator=accelerator,
                 class_weights=loss_weights, callbacks=callbacks, generator=generator, seed=ctx.seed,
                 metric=ctx.metric, penalty=prepared.penalty)
    trained_layout = use_channels_last(train.channels_last, network, accelerator.device)
    # The probabilities evaluate scores are those the package serves (its card records the precision): in
    # ``train.eval_precision``, on the CPU timed on forward passes of the trained model like training was
    network = accelerator.unwrap_model(network, keep_fp32_wrapper=False)  # scoring sets its own autocast
    network.eval()

    def val_batch() -> tuple[Any, torch.Tensor]:  # a median-length batch of the length-sorted validation set
        inputs, labels = timing_batch(make_loader(datasets["validation"], train.batch_size * 2, tokenizer=tokenizer))
        return to_memory_format(inputs, trained_layout), labels

    scoring = choose_precision(train.eval_precision, device=accelerator.device, model=network,
                               batch=val_batch, timer=partial(forward_seconds, channels_last=train.channels_last),
                               key={"phase": "evaluate", "backbone": dp.model.name,
                                    **model_signature(network, trainable=False), "image_size": dp.model.image_size,
                                    "max_length": dp.model.max_length, "batch_size": train.batch_size * 2,
                                    **forward_layouts(train.channels_last, network, accelerator.device)})
    channels_last = use_channels_last(train.channels_last, network, accelerator.device, scoring.precision,
                                      forward_only=True)
    if channels_last != trained_layout:  # bf16 scoring of an image model on the CPU: channels-last
        network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    val_probs, val_labels = result.best_val_probs, result.best_val_labels  # the best epoch's, as scored
    if (val_probs is None or val_labels is None or scoring.precision != precision.precision
            or channels_last != trained_layout):
        val_loader = accelerator.prepare(make_loader(datasets["validation"], train.batch_size * 2, **loader_kw))
        val_probs, val_labels, _ = predict(network, val_loader, accelerator, channels_last, scoring.precision)
    test_probs, test_labels, _ = predict(network, test_loader, accelerator, channels_last, scoring.precision)
    network = accelerator.unwrap_model(network)
    trainable, total = count_parameters(network)
    names = {n for n, p in network.named_parameters() if p.requires_grad} | {n for n, _ in network.named_buffers()}
    kept = {k: v.contiguous() for k, v in sorted(result.best_state.items()) if k in names}
    if out is not None and accelerator.is_main_process:
        write_safetensors(out / "weights.safetensors", kept, metadata={"regime": regime.name,
                                                                       "contents": "trainable parameters and buffers"})
    if out is not None and accelerator.is_main_process and ctx.card is not None:
        from shared.serving.package import save_network

        card = replace(ctx.card, precision=scoring.precision, aux_logits=train.aux_loss_weight is not None)
        save_network(network, out / PACKAGE, card, tokenizer=tokenizer)  # merges an adapter: the last use
    accelerator.wait_for_everyone()  # nobody still reads the checkpoints
    if accelerator.is_main_process and ctx.checkpoints is not None:
        shutil.rmtree(ctx.checkpoints, ignore_errors=True)
    info = dict(prepared.info)
    info.update(trainable_params=trainable, total_params=total, train_seconds=result.train_seconds,
                train_samples_per_second=result.samples_per_second, peak_memory_mb=result.peak_memory_mb,
                best_epoch=result.best_epoch + 1, epochs_run=len(result.history), history=result.history,
                device=str(accelerator.device), processes=accelerator.num_processes, **precision.record(),
                **{f"eval_{k}": v for k, v in scoring.record().items()})
    return Predictions(val_probs, val_labels, test_probs, test_labels), info


def run_regime(regime: Regime[Any], ctx: RegimeContext, out: Path | None) -> tuple[Predictions, dict[str, Any]]:
    """Run ``regime`` on ``ctx``: through the shared loop, or the regime's own fit (main process only)."""
    if isinstance(regime, NetworkRegime):
        return train_network(regime, ctx, out)
    if isinstance(regime, FittedRegime):
        if out is None:
            raise ValueError(f"regime {regime.name} fits on the main process only; give it an output folder")
        return regime.fit(ctx, out)
    raise TypeError(f"regime {regime.name} is neither a NetworkRegime nor a FittedRegime")
