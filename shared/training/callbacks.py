"""Small callbacks around the training loop (:func:`shared.training.loop.fit`), in the manner of Keras and
Lightning: keeping the best epoch, early stopping, per-epoch checkpoints with exact resume, and logging.

The loop calls :meth:`Callback.on_fit_start` once (after the model, optimizer and scheduler exist) and
:meth:`Callback.on_epoch_end` after every validated epoch, in the order of its callback list; a callback
stops training by setting :attr:`LoopState.stop`. Under DDP every process runs every callback, so all of
them take the same decisions; callbacks that write (checkpoints, logs) do so on the main process only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from shared.training.checkpoint import capture_rng_state, load_latest_checkpoint, restore_rng_state, save_checkpoint


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A true copy of ``model``'s state on the CPU (later updates leave it alone)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class FitResult:
    """What :func:`~shared.training.loop.fit` measured and kept."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int = -1
    best_score: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_samples: int = 0
    peak_memory_mb: float = 0.0
    best_val_probs: np.ndarray | None = None  # the validation predictions of the best epoch
    best_val_labels: np.ndarray | None = None

    @property
    def samples_per_second(self) -> float:
        """Training throughput over the whole fit."""
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class LoopState:
    """What the callbacks see: the prepared model (possibly DDP- or PEFT-wrapped), its optimizer and
    schedule, the result so far, the next epoch to run, and the stop flag."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Accelerator
    result: FitResult
    next_epoch: int = 0
    stop: bool = False

    @property
    def unwrapped(self) -> nn.Module:
        """The model without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)


@dataclass(frozen=True)
class Epoch:
    """One validated epoch: its index (0-based), the logged record, the selection score and the validation
    predictions it was computed from."""

    index: int
    record: dict[str, float]
    score: float
    val_probs: np.ndarray
    val_labels: np.ndarray


class Callback:
    """A hook around the loop; both methods do nothing unless overridden."""

    def on_fit_start(self, state: LoopState) -> None:
        """Called once, before the first epoch runs."""

    def on_epoch_end(self, state: LoopState, epoch: Epoch) -> None:
        """Called after every epoch, once it is validated and appended to ``state.result.history``."""


class KeepBest(Callback):
    """Keeps a true copy of the weights and validation predictions of the best-scoring epoch (a strictly
    higher score replaces them; ties keep the earlier epoch)."""

    def on_epoch_end(self, state: LoopState, epoch: Epoch) -> None:
        result = state.result
        if epoch.score > result.best_score:
            result.best_score, result.best_epoch = epoch.score, epoch.index
            result.best_state = state_copy(state.unwrapped)
            result.best_val_probs, result.best_val_labels = epoch.val_probs, epoch.val_labels


@dataclass
class EarlyStopping(Callback):
    """Stops once ``patience`` epochs in a row did not beat the best score (place it after :class:`KeepBest`)."""

    patience: int

    def stale(self, state: LoopState) -> int:
        """Epochs run since the best one (all of them when none scored above -inf)."""
        return state.next_epoch - 1 - state.result.best_epoch

    def on_epoch_end(self, state: LoopState, epoch: Epoch) -> None:
        state.stop = state.stop or self.stale(state) >= self.patience


@dataclass
class Checkpointing(Callback):
    """Resumes from the newest complete checkpoint in ``directory`` and writes one after every epoch (main
    process only): model, optimizer, schedule, RNG streams, the result so far and the stop decision, so a
    resumed fit ends bit for bit where an uninterrupted one would (RELIABILITY 3). Place it after the
    callbacks whose decisions it saves (:class:`KeepBest`, :class:`EarlyStopping`)."""

    directory: Path

    def on_fit_start(self, state: LoopState) -> None:
        saved = load_latest_checkpoint(self.directory)
        if saved is None:
            return
        state.unwrapped.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        restore_rng_state(saved["rng"])
        result = state.result
        state.next_epoch, state.stop = int(saved["epoch"]) + 1, bool(saved.get("stop", False))
        result.best_state, result.best_epoch = saved["best_state"], int(saved["best_epoch"])
        result.best_score, result.history = float(saved["best_score"]), list(saved["history"])
        result.train_seconds, result.train_samples = float(saved["seconds"]), int(saved["samples"])
        if saved.get("best_val") is not None:
            result.best_val_probs, result.best_val_labels = (t.numpy() for t in saved["best_val"])
        state.accelerator.print(f"resumed from epoch {state.next_epoch - 1} checkpoint in {self.directory}")

    def on_epoch_end(self, state: LoopState, epoch: Epoch) -> None:
        if not state.accelerator.is_main_process:
            return
        result = state.result
        best_val = None
        if result.best_val_probs is not None and result.best_val_labels is not None:
            best_val = [torch.from_numpy(result.best_val_probs), torch.from_numpy(result.best_val_labels)]
        save_checkpoint(self.directory, epoch.index, {
            "model": state_copy(state.unwrapped), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "rng": capture_rng_state(), "epoch": epoch.index,
            "best_state": result.best_state, "best_epoch": result.best_epoch, "best_score": result.best_score,
            "history": result.history, "seconds": result.train_seconds, "samples": result.train_samples,
            "best_val": best_val, "stop": state.stop,
        })


@dataclass
class LogEpochs(Callback):
    """Passes every epoch's record to ``log(record, step)`` on the main process (e.g. MLflow's
    ``log_metrics``)."""

    log: Callable[[dict[str, float], int], None]

    def on_epoch_end(self, state: LoopState, epoch: Epoch) -> None:
        if state.accelerator.is_main_process:
            self.log(epoch.record, epoch.index)
