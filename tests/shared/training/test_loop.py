"""The shared training loop: it learns, keeps a true copy of the best weights, fails loudly on divergence,
resumes exactly (RELIABILITY 3) and gives the same numbers for the same seed (RELIABILITY 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams, TrainParams
from shared.data.loaders import make_dataset, make_loader
from shared.evaluation.metrics import selection_score
from shared.models import build_model
from shared.registry import get_regime
from shared.testing.regimes import tiny_context
from shared.training import callbacks as training_callbacks
from shared.training import loop as training
from shared.training.callbacks import Callback, Checkpointing, FitResult, LogEpochs
from shared.training.checkpoint import load_latest_checkpoint, seed_everything
from shared.training.loop import DivergenceError, compute_loss, fit, make_accelerator, split_outputs


class Killed(Exception):
    """Stands in for the process dying right after a checkpoint was written."""


def run_fit(dd: DatasetDict, model_params: ModelParams, *, seed: int = 0, checkpoint_dir: Path | None = None,
            snapshots: list[dict[str, torch.Tensor]] | None = None, val_predictions: list | None = None,
            metric: str = "accuracy", **train_kw: Any) -> tuple[torch.nn.Module, FitResult]:
    """Train the way ``pipelines/train.py`` does: seed_everything, its generator to make_loader and fit."""
    train = TrainParams(**{"epochs": 3, "batch_size": 8, "lr": 1e-2, "backbone_lr_factor": 0.5,
                           "warmup_fraction": 0.0, "patience": 5, **train_kw})
    dp = DomainParams(data=DataParams(dataset="tiny"), model=model_params, train=train)
    generator = seed_everything(seed, deterministic=train.deterministic)
    model = build_model(model_params, "image", 2, pretrained=False)
    datasets = {s: make_dataset(dd[s], model, augment=(s == "train")) for s in ("train", "validation")}
    prepared = get_regime("full").for_domain(dp).prepare(model, tiny_context(dp, "image", dd, Path("unused")))
    model, groups = prepared.model, prepared.param_groups
    accelerator = make_accelerator(train, cpu=True)
    train_loader = make_loader(datasets["train"], train.batch_size, shuffle=True, generator=generator)
    val_loader = make_loader(datasets["validation"], train.batch_size * 2)

    def snapshot(record: dict[str, float], epoch: int) -> None:
        if snapshots is not None:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    callbacks: list[Callback] = [] if checkpoint_dir is None else [Checkpointing(checkpoint_dir)]
    result = fit(model, groups, train_loader, val_loader, train, accelerator=accelerator,
                 callbacks=[*callbacks, LogEpochs(snapshot)], generator=generator, seed=seed, metric=metric)
    if val_predictions is not None:  # the model (holding the best weights) scored on validation afresh
        val_predictions.extend(training.predict(model, make_loader(datasets["validation"], 16), accelerator)[:2])
    return model, result


def assert_states_equal(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{what}: {key} differs"
        elif isinstance(a[key], dict):
            assert_states_equal(a[key], b[key], f"{what}.{key}")
        else:
            assert a[key] == b[key], f"{what}: {key} differs"


def test_fit_learns_and_returns_a_true_copy_of_the_best_state(image_dd: DatasetDict,
                                                              tiny_image_params: ModelParams) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []
    fresh: list = []
    model, result = run_fit(image_dd, tiny_image_params, snapshots=snapshots, val_predictions=fresh)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert result.best_score == max(h["val_score"] for h in result.history)
    assert result.best_score == result.history[result.best_epoch]["val_score"]
    assert result.train_samples == 3 * len(image_dd["train"]) and result.samples_per_second > 0
    # the kept state is the best epoch's weights, and fit leaves the model holding them
    assert_states_equal(result.best_state, snapshots[result.best_epoch], "best state vs that epoch")
    assert_states_equal(result.best_state, dict(model.state_dict()), "model after fit vs best state")
    # the validation predictions kept are the best weights' (train_network reports them, no second pass)
    assert result.best_val_probs is not None and result.best_val_labels is not None
    assert np.array_equal(result.best_val_labels, fresh[1])
    np.testing.assert_allclose(result.best_val_probs, fresh[0], atol=1e-6)
    # a true copy: changing the model afterwards leaves it alone
    kept = {k: v.clone() for k, v in result.best_state.items()}
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(1)
    assert_states_equal(result.best_state, kept, "best state after mutating the model")


def test_fit_respects_max_steps_per_epoch(image_dd: DatasetDict, tiny_image_params: ModelParams) -> None:
    _, result = run_fit(image_dd, tiny_image_params, epochs=1, max_steps_per_epoch=2)
    assert result.train_samples == 2 * 8


def test_non_finite_loss_raises_divergence_error(image_dd: DatasetDict, tiny_image_params: ModelParams) -> None:
    with pytest.raises(DivergenceError, match="non-finite training loss"):
        run_fit(image_dd, tiny_image_params, lr=1e30, grad_clip=None, weight_decay=0.0)


def test_resume_after_a_kill_is_exact(image_dd: DatasetDict, tiny_image_params: ModelParams, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, straight = run_fit(image_dd, tiny_image_params, checkpoint_dir=tmp_path / "straight")

    real_save = training_callbacks.save_checkpoint
    saved: list[int] = []

    def save_then_die(directory: Path, step: int, state: dict, **kw: Any) -> Path:
        real_save(directory, step, state, **kw)
        saved.append(step)
        raise Killed(f"killed after the checkpoint of epoch {step}")

    with monkeypatch.context() as patch:
        patch.setattr(training_callbacks, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            run_fit(image_dd, tiny_image_params, checkpoint_dir=tmp_path / "resumed")
    assert saved == [0]

    _, resumed = run_fit(image_dd, tiny_image_params, checkpoint_dir=tmp_path / "resumed")
    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch and resumed.train_samples == straight.train_samples
    assert_states_equal(resumed.best_state, straight.best_state, "best state")
    assert np.array_equal(resumed.best_val_probs, straight.best_val_probs)
    last_straight, last_resumed = (load_latest_checkpoint(tmp_path / d) for d in ("straight", "resumed"))
    assert last_straight is not None and last_resumed is not None
    assert last_straight["epoch"] == last_resumed["epoch"] == 2
    for part in ("model", "optimizer", "scheduler"):
        assert_states_equal(last_resumed[part], last_straight[part], f"final {part}")


def test_same_seed_same_history_other_seed_differs(image_dd: DatasetDict, tiny_image_params: ModelParams) -> None:
    _, first = run_fit(image_dd, tiny_image_params, seed=0, epochs=2)
    _, again = run_fit(image_dd, tiny_image_params, seed=0, epochs=2)
    _, other = run_fit(image_dd, tiny_image_params, seed=1, epochs=2)
    assert first.history == again.history
    assert_states_equal(first.best_state, again.best_state, "same seed")
    assert other.history != first.history


def test_compute_loss_adds_weighted_auxiliary_losses() -> None:
    gen = torch.Generator().manual_seed(0)
    main, aux1, aux2 = (torch.randn(6, 3, generator=gen) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    weights = torch.tensor([1.0, 2.0, 0.5])
    total, parts = compute_loss((main, aux1, None, aux2), labels, aux_weight=0.3, class_weights=weights)
    ce = [F.cross_entropy(x, labels, weight=weights) for x in (main, aux1, aux2)]
    torch.testing.assert_close(total, ce[0] + 0.3 * (ce[1] + ce[2]))
    assert parts == pytest.approx({"loss_main": ce[0].item(), "loss_aux1": ce[1].item(),
                                   "loss_aux2": ce[2].item()})
    plain, plain_parts = compute_loss(main, labels, aux_weight=0.3, class_weights=None)
    torch.testing.assert_close(plain, F.cross_entropy(main, labels))
    assert set(plain_parts) == {"loss_main"}


def test_split_outputs() -> None:
    logits, aux = torch.zeros(2, 3), torch.ones(2, 3)
    assert split_outputs(logits)[0] is logits and split_outputs(logits)[1] == []
    main, rest = split_outputs((logits, None, aux))
    assert main is logits and len(rest) == 1 and rest[0] is aux


@pytest.mark.parametrize("metric", ["accuracy", "auroc"])
def test_best_epoch_is_chosen_by_the_given_metric(image_dd: DatasetDict, tiny_image_params: ModelParams,
                                                  metric: str) -> None:
    """One metric decides: every epoch's ``val_score`` is the domain's primary metric on validation, and the
    kept epoch is the one where it peaked."""
    _, result = run_fit(image_dd, tiny_image_params, epochs=3, metric=metric)
    scores = [r["val_score"] for r in result.history]
    assert result.best_epoch == int(np.argmax(scores))
    assert result.best_val_probs is not None and result.best_val_labels is not None
    assert result.best_score == pytest.approx(selection_score(metric, result.best_val_labels, result.best_val_probs))


def test_early_stopping_stops_after_patience_and_a_resumed_fit_stays_stopped(
        image_dd: DatasetDict, tiny_image_params: ModelParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a negligible learning rate (1e-12) no epoch beats the first: patience 1 stops after the second
    of five epochs, and a fit resumed from that epoch's checkpoint runs no further epoch."""
    _, straight = run_fit(image_dd, tiny_image_params, epochs=5, patience=1, lr=1e-12)
    assert len(straight.history) == 2 and straight.best_epoch == 0

    real_save = training_callbacks.save_checkpoint

    def save_then_die(directory: Path, step: int, state: dict, **kw: Any) -> Path:
        real_save(directory, step, state, **kw)
        if step == 1:
            raise Killed("killed after the checkpoint of the stopping epoch")
        return directory

    with monkeypatch.context() as patch:
        patch.setattr(training_callbacks, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            run_fit(image_dd, tiny_image_params, epochs=5, patience=1, lr=1e-12, checkpoint_dir=tmp_path)
    _, resumed = run_fit(image_dd, tiny_image_params, epochs=5, patience=1, lr=1e-12, checkpoint_dir=tmp_path)
    assert resumed.history == straight.history
