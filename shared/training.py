"""One training loop for both modalities, on ``accelerate`` (device, bf16 autocast on GPU, DDP).

AdamW with linear warmup + cosine decay, validation every epoch, a true copy of the best-validation
weights, early stopping, per-epoch checkpoints (exact resume), auxiliary-head losses, and a loud
failure on a non-finite loss.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from shared.checkpoint import capture_rng_state, load_latest_checkpoint, restore_rng_state, save_checkpoint
from shared.config import TrainParams
from shared.data import split_batch
from shared.features import probe_score
from shared.regimes import set_train_mode


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class FitResult:
    """What :func:`fit` measured and kept."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_samples: int = 0
    peak_memory_mb: float = 0.0

    @property
    def samples_per_second(self) -> float:
        """Training throughput over the whole fit."""
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


def make_accelerator(train: TrainParams, cpu: bool = False) -> Accelerator:
    """An Accelerator: bf16 autocast on a GPU when ``mixed_precision: auto``, fp32 on the CPU."""
    mixed = train.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and not cpu else "no"
    return Accelerator(mixed_precision=mixed, cpu=cpu)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> Any:
    """Linear warmup for ``warmup_fraction`` of the steps, then cosine decay to zero."""
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def split_outputs(outputs: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main logits and auxiliary logits (models with aux heads return a tuple in training mode)."""
    if isinstance(outputs, (tuple, list)):
        return outputs[0], [o for o in outputs[1:] if o is not None]
    return outputs, []


def compute_loss(outputs: Any, labels: torch.Tensor, *, aux_weight: float, class_weights: torch.Tensor | None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the main logits plus ``aux_weight`` x each auxiliary cross-entropy."""
    logits, aux = split_outputs(outputs)
    main = F.cross_entropy(logits.float(), labels, weight=class_weights)
    total = main
    parts = {"loss_main": main.item()}
    for i, aux_logits in enumerate(aux, start=1):
        aux_loss = F.cross_entropy(aux_logits.float(), labels, weight=class_weights)
        parts[f"loss_aux{i}"] = aux_loss.item()
        total = total + aux_weight * aux_loss
    return total, parts


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=True)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities, labels and mean loss over ``loader`` (gathered across processes)."""
    model.eval()
    probs, labels, losses = [], [], []
    for batch in loader:
        inputs, y = split_batch(batch)
        inputs, y = _to_device(inputs, accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            logits, _ = split_outputs(model(inputs))
        logits = logits.float()
        loss = F.cross_entropy(logits, y, reduction="none")
        logits, y, loss = accelerator.gather_for_metrics((logits, y, loss))
        probs.append(logits.softmax(-1).cpu().numpy())
        labels.append(y.cpu().numpy())
        losses.append(loss.cpu().numpy())
    loss_all = np.concatenate(losses)
    return np.concatenate(probs), np.concatenate(labels), float(loss_all.mean())


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit(model: nn.Module, param_groups: list[dict[str, Any]], train_loader: DataLoader, val_loader: DataLoader,
        train: TrainParams, *, accelerator: Accelerator, class_weights: torch.Tensor | None = None,
        checkpoint_dir: Path | None = None, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        generator: torch.Generator | None = None, seed: int = 0) -> FitResult:
    """Train ``model`` and return the best-validation weights and what was measured."""
    optimizer = torch.optim.AdamW(param_groups)
    steps_per_epoch = len(train_loader)
    if train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, train.max_steps_per_epoch)
    scheduler = warmup_cosine(optimizer, steps_per_epoch * train.epochs, train.warmup_fraction)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    if class_weights is not None:
        class_weights = class_weights.to(accelerator.device)
    aux_weight = train.aux_loss_weight if train.aux_loss_weight is not None else 0.3
    result = FitResult(best_state=_state_copy(accelerator.unwrap_model(model)), best_epoch=-1,
                       best_score=-math.inf)
    start_epoch, stale = 0, 0
    if checkpoint_dir is not None:
        state = load_latest_checkpoint(checkpoint_dir)
        if state is not None:
            accelerator.unwrap_model(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"])
            start_epoch, stale = int(state["epoch"]) + 1, int(state["stale"])
            result.best_state, result.best_epoch = state["best_state"], int(state["best_epoch"])
            result.best_score, result.history = float(state["best_score"]), list(state["history"])
            result.train_seconds, result.train_samples = float(state["seconds"]), int(state["samples"])
            accelerator.print(f"resumed from epoch {start_epoch - 1} checkpoint in {checkpoint_dir}")
    for epoch in range(start_epoch, train.epochs):
        if stale >= train.patience:
            break
        set_train_mode(model)
        if generator is not None:  # the shuffle order of epoch e depends only on (seed, e): exact resume
            generator.manual_seed(seed * 100_003 + epoch)
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{train.epochs}",
                   disable=not accelerator.is_local_main_process, leave=False)
        for step, batch in enumerate(bar):
            if step >= steps_per_epoch:
                break
            inputs, labels = split_batch(batch)
            with accelerator.autocast():
                outputs = model(inputs)
            loss, parts = compute_loss(outputs, labels, aux_weight=aux_weight, class_weights=class_weights)
            if not torch.isfinite(loss):
                raise DivergenceError(f"non-finite training loss {loss.item()} at epoch {epoch + 1}, "
                                      f"step {step + 1}; lower train.lr or enable grad_clip")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if train.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            scheduler.step()
            n = len(labels)
            seen += n
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}")
        result.train_seconds += time.perf_counter() - t0
        result.train_samples += seen * accelerator.num_processes
        val_probs, val_labels, val_loss = predict(model, val_loader, accelerator)
        score = probe_score(val_labels, val_probs)
        record = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
        record.update(val_loss=val_loss, val_score=score, lr=scheduler.get_last_lr()[0],
                      val_accuracy=float((val_probs.argmax(1) == val_labels).mean()))
        result.history.append(record)
        if score > result.best_score:
            result.best_score, result.best_epoch, stale = score, epoch, 0
            result.best_state = _state_copy(accelerator.unwrap_model(model))
        else:
            stale += 1
        if on_epoch is not None and accelerator.is_main_process:
            on_epoch(epoch, record)
        if checkpoint_dir is not None and accelerator.is_main_process:
            save_checkpoint(checkpoint_dir, epoch, {
                "model": _state_copy(accelerator.unwrap_model(model)), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": capture_rng_state(), "epoch": epoch, "stale": stale,
                "best_state": result.best_state, "best_epoch": result.best_epoch,
                "best_score": result.best_score, "history": result.history, "seconds": result.train_seconds,
                "samples": result.train_samples,
            })
        accelerator.wait_for_everyone()
    result.peak_memory_mb = peak_memory_mb(accelerator.device)
    accelerator.unwrap_model(model).load_state_dict(result.best_state)
    return result
