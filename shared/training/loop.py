"""One training loop for both modalities, on ``accelerate`` (device, bf16 autocast on GPU, DDP).

AdamW with linear warmup + cosine decay, validation every epoch, auxiliary-head losses and a loud failure on
a non-finite loss; keeping the best epoch, early stopping, per-epoch checkpoints (exact resume) and logging
are small callbacks around the loop (:mod:`shared.training.callbacks`).

Scale out: the same code runs under ``accelerate launch`` / ``torchrun`` (DDP; gloo on the CPU). Samplers
are sharded by ``accelerator.prepare``, epoch losses are summed over the processes, validation and test
predictions are gathered (``gather_for_metrics``), so every process takes the same early-stopping
decision. Callers write outputs and log from the main process only (:func:`distributed_state`).

GPU fast path (CUDA only): channels-last image models and inputs (``train.channels_last``, default on
for image models on CUDA; on the CPU only bf16 scoring, :func:`shared.training.precision.use_channels_last`),
optional ``torch.compile``
(``train.compile``), non-blocking host-to-device copies from pinned memory, fused AdamW, cuDNN autotuning
(unless ``train.deterministic``), and no host synchronisation per step: losses accumulate on the device
and are checked for finiteness every :data:`CUDA_SYNC_EVERY` steps and at the end of each epoch.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, DynamoBackend
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from shared.config import TrainParams
from shared.data.loaders import in_split_order, split_batch
from shared.evaluation.metrics import selection_score
from shared.regimes.base import Penalty
from shared.regimes.finetune import set_train_mode
from shared.training.callbacks import Callback, EarlyStopping, Epoch, FitResult, KeepBest, LoopState, state_copy
from shared.training.precision import Precision, autocast, to_memory_format, use_channels_last


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


CUDA_SYNC_EVERY = 25  # steps between host synchronisations (finiteness check, progress bar) on CUDA


def _use_cpu(cpu: bool) -> bool:
    """Force the CPU when asked, and for a multi-process launch on a machine without CUDA.

    ``accelerate`` picks its gloo (MULTI_CPU) backend only when told to use the CPU, but ``accelerate launch
    --multi_gpu`` / ``torchrun`` on a CPU-only machine do not say so (``accelerate launch --cpu`` does, but
    without an MPI hostfile it starts a single process).
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return cpu or (distributed and not torch.cuda.is_available())


def distributed_state(cpu: bool = False) -> PartialState:
    """The process's place in a (possibly multi-process) launch; initialises the process group once.

    Use it before building an :class:`Accelerator` to decide which process opens the MLflow run and
    writes outputs (``state.is_main_process``).
    """
    return PartialState(cpu=_use_cpu(cpu))


def training_device(cpu: bool = False) -> torch.device:
    """The device :func:`make_accelerator` will use (known before the Accelerator exists)."""
    return torch.device("cuda" if torch.cuda.is_available() and not _use_cpu(cpu) else "cpu")


def make_accelerator(train: TrainParams, cpu: bool = False, precision: Precision | None = None) -> Accelerator:
    """An Accelerator in ``precision`` (bf16 autocast or fp32); without one, ``train.precision`` with
    ``auto`` read as bf16 on a GPU and fp32 on the CPU (:func:`shared.training.precision.choose_precision`
    measures instead).

    On CUDA, batches are copied to the device without blocking (the loaders pin memory).
    """
    cpu = _use_cpu(cpu)
    if precision is None:
        auto: Precision = "bf16" if training_device(cpu).type == "cuda" else "fp32"
        precision = auto if train.precision == "auto" else train.precision
    mixed = "bf16" if precision == "bf16" else "no"
    current = AcceleratorState._shared_state.get("_mixed_precision")  # None until an Accelerator exists
    if current is not None and str(current) != mixed:
        # one process training several models (the sweep, tests) in different precisions: accelerate keeps
        # one precision per process, so its state is reset (the distributed state stays)
        AcceleratorState._reset_state(reset_partial_state=False)
    kwargs: dict[str, Any] = {}
    if torch.cuda.is_available() and not cpu:
        kwargs["dataloader_config"] = DataLoaderConfiguration(non_blocking=True)
    return Accelerator(mixed_precision=mixed, cpu=cpu, **kwargs)


def make_optimizer(param_groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel on a GPU (one launch for all parameters), the default on the CPU."""
    if device.type == "cuda":
        return torch.optim.AdamW(param_groups, fused=True)
    return torch.optim.AdamW(param_groups)


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


def loss_terms(outputs: Any, labels: torch.Tensor, *, aux_weight: float, class_weights: torch.Tensor | None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Like :func:`compute_loss`, with the parts as detached tensors (no host synchronisation)."""
    logits, aux = split_outputs(outputs)
    main = F.cross_entropy(logits.float(), labels, weight=class_weights)
    total = main
    parts = {"loss_main": main.detach()}
    for i, aux_logits in enumerate(aux, start=1):
        aux_loss = F.cross_entropy(aux_logits.float(), labels, weight=class_weights)
        parts[f"loss_aux{i}"] = aux_loss.detach()
        total = total + aux_weight * aux_loss
    return total, parts


def compute_loss(outputs: Any, labels: torch.Tensor, *, aux_weight: float, class_weights: torch.Tensor | None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the main logits plus ``aux_weight`` x each auxiliary cross-entropy."""
    total, parts = loss_terms(outputs, labels, aux_weight=aux_weight, class_weights=class_weights)
    return total, {k: v.item() for k, v in parts.items()}


def forward_loss(model: nn.Module, batch: Any, accelerator: Accelerator, *, aux_weight: float,
                 class_weights: torch.Tensor | None = None, channels_last: bool = False,
                 penalty: Penalty | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """The forward half of a training step: (loss, detached loss parts, batch size). ``penalty`` (a regime's
    term of the weights, e.g. L2-SP) is added to the loss and reported as ``loss_penalty``."""
    inputs, labels = split_batch(batch)
    inputs = to_memory_format(inputs, channels_last)
    with accelerator.autocast():
        outputs = model(inputs)
    loss, parts = loss_terms(outputs, labels, aux_weight=aux_weight, class_weights=class_weights)
    if penalty is not None:
        term = penalty(model)
        parts["loss_penalty"] = term.detach()
        loss = loss + term
    return loss, parts, len(labels)


def optimizer_step(model: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, accelerator: Accelerator,
                   *, grad_clip: float | None, scheduler: Any = None) -> None:
    """The backward half of a training step: gradients (all-reduced under DDP), clipping, update, schedule."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, accelerator: Accelerator, *,
               aux_weight: float = 0.3, class_weights: torch.Tensor | None = None, grad_clip: float | None = None,
               scheduler: Any = None, channels_last: bool = False) -> torch.Tensor:
    """One full step (:func:`forward_loss` + :func:`optimizer_step`); returns the detached loss, unsynced."""
    loss, _, _ = forward_loss(model, batch, accelerator, aux_weight=aux_weight, class_weights=class_weights,
                              channels_last=channels_last)
    optimizer_step(model, loss, optimizer, accelerator, grad_clip=grad_clip, scheduler=scheduler)
    return loss.detach()


def compile_model(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """``torch.compile`` the prepared model, unless ``accelerate launch --dynamo_backend`` already did."""
    plugin = getattr(accelerator.state, "dynamo_plugin", None)
    if plugin is not None and plugin.backend != DynamoBackend.NO:
        return model
    return cast(nn.Module, torch.compile(model))


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=True)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Accelerator, channels_last: bool = False,
            precision: Precision | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities, labels (in the split's order) and mean loss over ``loader`` (gathered across
    processes); in the accelerator's mixed precision, or in ``precision`` when given (``model`` then must not
    be a prepared model with accelerate's autocast wrapper around its forward)."""
    model.eval()
    probs, labels, losses = [], [], []
    for batch in loader:
        inputs, y = split_batch(batch)
        inputs, y = _to_device(inputs, accelerator.device), y.to(accelerator.device, non_blocking=True)
        inputs = to_memory_format(inputs, channels_last)
        with accelerator.autocast() if precision is None else autocast(accelerator.device, precision):
            logits, _ = split_outputs(model(inputs))
        logits = logits.float()
        loss = F.cross_entropy(logits, y, reduction="none")
        logits, y, loss = accelerator.gather_for_metrics((logits, y, loss))
        probs.append(logits.softmax(-1).cpu().numpy())
        labels.append(y.cpu().numpy())
        losses.append(loss.cpu().numpy())
    loss_all = np.concatenate(losses)
    probs_all, labels_all = in_split_order(loader.dataset, np.concatenate(probs), np.concatenate(labels))
    return probs_all, labels_all, float(loss_all.mean())


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_epoch(state: LoopState, train_loader: DataLoader, epoch: int, steps: int, *, train: TrainParams,
                class_weights: torch.Tensor | None, channels_last: bool, penalty: Penalty | None
                ) -> tuple[dict[str, float], int]:
    """One pass over (at most ``steps`` batches of) ``train_loader``: the per-sample mean of each loss part
    over every process, and the number of samples seen by all processes. Raises :class:`DivergenceError`
    on a non-finite loss (checked every step on the CPU, every :data:`CUDA_SYNC_EVERY` steps on CUDA)."""
    model, accelerator = state.model, state.accelerator
    sync_every = CUDA_SYNC_EVERY if accelerator.device.type == "cuda" else 1
    aux_weight = train.aux_loss_weight or 0.0
    set_train_mode(model)
    names: list[str] = ["loss"]
    totals: torch.Tensor | None = None  # per-name sum of (loss x batch size), float64, on the device
    seen = 0
    bar = tqdm(train_loader, total=steps, desc=f"epoch {epoch + 1}/{train.epochs}",
               disable=not accelerator.is_local_main_process, leave=False)
    for step, batch in enumerate(bar):
        if step >= steps:
            break
        loss, parts, n = forward_loss(model, batch, accelerator, aux_weight=aux_weight, class_weights=class_weights,
                                      channels_last=channels_last, penalty=penalty)
        if sync_every == 1 and not torch.isfinite(loss):
            raise DivergenceError(f"non-finite training loss {loss.item()} at epoch {epoch + 1}, "
                                  f"step {step + 1}; lower train.lr or enable grad_clip")
        optimizer_step(model, loss, state.optimizer, accelerator, grad_clip=train.grad_clip, scheduler=state.scheduler)
        if totals is None:
            names = ["loss", *parts]
            totals = torch.zeros(len(names), dtype=torch.float64, device=loss.device)
        totals += torch.stack([loss.detach(), *parts.values()]).double() * n
        seen += n
        if (step + 1) % sync_every == 0:
            mean_loss = totals[0].item() / seen
            if not math.isfinite(mean_loss):
                raise DivergenceError(f"non-finite training loss at epoch {epoch + 1}, steps "
                                      f"{step + 2 - sync_every}-{step + 1}; lower train.lr or enable grad_clip")
            bar.set_postfix(loss=f"{mean_loss:.4f}")
    if totals is None:
        totals = torch.zeros(1, dtype=torch.float64, device=accelerator.device)
    if not bool(torch.isfinite(totals).all()):
        raise DivergenceError(f"non-finite training loss at epoch {epoch + 1}; lower train.lr or enable grad_clip")
    # sums and counts over every process (identity with one process)
    totals = accelerator.reduce(totals, reduction="sum")
    seen_all = int(accelerator.reduce(torch.tensor([seen], device=accelerator.device), reduction="sum").item())
    means = {f"train_{k}": v / max(seen_all, 1) for k, v in zip(names, totals.tolist(), strict=True)}
    return means, seen_all


def fit(model: nn.Module, param_groups: list[dict[str, Any]], train_loader: DataLoader, val_loader: DataLoader,
        train: TrainParams, *, accelerator: Accelerator, class_weights: torch.Tensor | None = None,
        callbacks: Sequence[Callback] = (), generator: torch.Generator | None = None, seed: int = 0, metric: str,
        penalty: Penalty | None = None) -> FitResult:
    """Train ``model`` and return the best-validation weights and what was measured.

    ``metric`` (the domain's primary metric) on validation scores every epoch; :class:`KeepBest` and
    :class:`EarlyStopping` (``train.patience``) always run, then ``callbacks`` (e.g. :class:`Checkpointing`,
    :class:`LogEpochs`) in order. ``penalty`` is a regime's extra loss term of the weights. Under DDP every
    process runs this, and the history holds losses averaged over all processes' samples.
    """
    device = accelerator.device
    channels_last = use_channels_last(train.channels_last, model, device)
    if device.type == "cuda":
        if not train.deterministic:
            torch.backends.cudnn.benchmark = True
        model.to(device)  # before the optimizer: fused AdamW wants its parameters on the GPU
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(param_groups, device)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    if train.compile:
        model = compile_model(model, accelerator)
    steps = len(train_loader)  # this process's share of the batches under DDP
    if train.max_steps_per_epoch:
        steps = min(steps, train.max_steps_per_epoch)
    # stepped once per optimizer step (not prepared: accelerate would step it once per process)
    scheduler = warmup_cosine(optimizer, steps * train.epochs, train.warmup_fraction)
    if class_weights is not None:
        class_weights = class_weights.to(device)
    state = LoopState(model, optimizer, scheduler, accelerator, FitResult(state_copy(accelerator.unwrap_model(model))))
    hooks = [KeepBest(), EarlyStopping(train.patience), *callbacks]
    for hook in hooks:
        hook.on_fit_start(state)
    result = state.result
    while state.next_epoch < train.epochs and not state.stop:
        epoch = state.next_epoch
        if generator is not None:  # the shuffle order of epoch e depends only on (seed, e): exact resume
            generator.manual_seed(seed * 100_003 + epoch)
        t0 = time.perf_counter()
        record, seen = train_epoch(state, train_loader, epoch, steps, train=train, class_weights=class_weights,
                                   channels_last=channels_last, penalty=penalty)
        result.train_seconds += time.perf_counter() - t0
        result.train_samples += seen
        val_probs, val_labels, val_loss = predict(model, val_loader, accelerator, channels_last)
        score = selection_score(metric, val_labels, val_probs)
        record.update(val_loss=val_loss, val_score=score, lr=scheduler.get_last_lr()[0],
                      val_accuracy=float((val_probs.argmax(1) == val_labels).mean()))
        result.history.append(record)
        state.next_epoch = epoch + 1
        for hook in hooks:
            hook.on_epoch_end(state, Epoch(epoch, record, score, val_probs, val_labels))
        accelerator.wait_for_everyone()
    result.peak_memory_mb = peak_memory_mb(device)
    accelerator.unwrap_model(model).load_state_dict(result.best_state)
    return result
