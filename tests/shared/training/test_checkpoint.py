"""Checkpoints are atomic and verifiable; resume is exact (RELIABILITY 3, 4, 5)."""

from __future__ import annotations

import errno
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shared.files.atomic import DiskFullError
from shared.training import checkpoint
from shared.training.checkpoint import (
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)


def _draws(generator: torch.Generator | None = None) -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        np.random.normal(size=1).tolist(),
        torch.rand(3).tolist(),
        torch.randint(0, 100, (3,), generator=generator).tolist() if generator else None,
    )


def _trainer(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return model, opt, sched


def _train(model: nn.Module, opt: torch.optim.Optimizer, sched: object, steps: int) -> None:
    for _ in range(steps):  # draws from torch's RNG (data and dropout), so RNG state matters
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _state(model: nn.Module, opt: torch.optim.Optimizer, sched: object, step: int) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "epoch": 1,
        "step": step,
        "best_metric": 0.75,
        "best_weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _ckpt_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_rng_capture_restore_reproduces_draws() -> None:
    seed_everything(1)
    generator = torch.Generator().manual_seed(7)
    state = capture_rng_state(generator)
    first = _draws(generator)
    _draws(generator)  # move every stream on
    restore_rng_state(state, generator)
    assert _draws(generator) == first


def test_rng_state_round_trips_weights_only(tmp_path: Path) -> None:
    seed_everything(3)
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    first = _draws()
    restore_rng_state(load_latest_checkpoint(tmp_path)["rng"])
    assert _draws() == first


def test_seed_everything_same_seed_same_numbers() -> None:
    g1 = seed_everything(5)
    a = _draws(g1)
    g2 = seed_everything(5)
    assert _draws(g2) == a
    seed_everything(6)
    assert _draws(torch.Generator().manual_seed(6))[:4] != a[:4]


def test_seed_everything_deterministic_toggles_torch_flag() -> None:
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_full_training_state_round_trips_with_weights_only(tmp_path: Path) -> None:
    model, opt, sched = _trainer()
    _train(model, opt, sched, 3)
    state = _state(model, opt, sched, 3)
    save_checkpoint(tmp_path, 3, state)
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded["step"] == 3 and loaded["epoch"] == 1 and loaded["best_metric"] == 0.75
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["scheduler"] == state["scheduler"]
    for key in ("model", "best_weights"):
        assert all(torch.equal(loaded[key][k], v) for k, v in state[key].items())
    model2, opt2, sched2 = _trainer(seed=99)
    model2.load_state_dict(loaded["model"], strict=True)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    seed_everything(0)
    model, opt, sched = _trainer()
    _train(model, opt, sched, 6)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    seed_everything(0)
    model, opt, sched = _trainer()
    _train(model, opt, sched, 3)
    save_checkpoint(tmp_path, 3, _state(model, opt, sched, 3))
    torch.rand(100)  # the interrupted process's RNG goes elsewhere before it dies

    loaded = load_latest_checkpoint(tmp_path)
    model, opt, sched = _trainer(seed=42)
    model.load_state_dict(loaded["model"])
    opt.load_state_dict(loaded["optimizer"])
    sched.load_state_dict(loaded["scheduler"])
    restore_rng_state(loaded["rng"])
    _train(model, opt, sched, 3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in uninterrupted.items())


def test_keeps_only_the_newest_two(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step})
    assert _ckpt_files(tmp_path) == [
        "ckpt-00000002.json",
        "ckpt-00000002.pt",
        "ckpt-00000003.json",
        "ckpt-00000003.pt",
    ]
    assert load_latest_checkpoint(tmp_path) == {"step": 3}


def test_enospc_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(1000)})
    before = _ckpt_files(tmp_path)
    real_save = torch.save

    def disk_full(obj: object, f: io.BufferedWriter) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half of it reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, 2, {"step": 2, "w": torch.zeros(1000)})
    assert info.value.errno == errno.ENOSPC
    assert _ckpt_files(tmp_path) == before  # no temp file, no partial ckpt-00000002
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(1000))


def _full_disk_oserror(obj: object, f: io.BufferedWriter) -> None:
    with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
        torch.serialization.save(obj, full)


def _full_disk_runtimeerror(obj: object, f: io.BufferedWriter) -> None:
    # torch's zip writer on a path hides the ENOSPC: "[enforce fail at inline_container.cc:...] . unexpected pos"
    torch.serialization.save(obj, "/dev/full")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("save", [_full_disk_oserror, _full_disk_runtimeerror])
def test_full_disk_says_so_and_names_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    save: object) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    before = _ckpt_files(tmp_path)
    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, 2, {"step": 2, "w": torch.zeros(100_000)})
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] no space left on device: '{tmp_path / 'ckpt-00000002.pt'}'"
    assert isinstance(info.value, DiskFullError)
    assert _ckpt_files(tmp_path) == before


def test_other_save_errors_pass_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(obj: object, f: io.BufferedWriter) -> None:
        raise RuntimeError("cannot pickle 'generator' object")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(tmp_path, 1, {"step": 1})


def test_truncated_newest_is_skipped_with_warning(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    newest = save_checkpoint(tmp_path, 2, {"step": 2})
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ckpt-00000002.pt"):
        assert load_latest_checkpoint(tmp_path) == {"step": 1}


def test_checkpoint_without_sidecar_is_skipped(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    torch.save({"step": 2}, tmp_path / "ckpt-00000002.pt")  # a crash before the sidecar was written
    with pytest.warns(UserWarning, match="ckpt-00000002.pt.*sidecar"):
        assert load_latest_checkpoint(tmp_path) == {"step": 1}


def test_unloadable_checkpoint_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})
    save_checkpoint(tmp_path, 2, {"step": 2, "x": torch.nn.Linear(1, 1)})  # a module needs full pickle
    with pytest.warns(UserWarning, match="ckpt-00000002.pt.*cannot be loaded"):
        assert load_latest_checkpoint(tmp_path) == {"step": 1}


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path / "missing") is None
    assert load_latest_checkpoint(tmp_path) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    seed_everything(11)
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    first = torch.rand(4, device="cuda").tolist()
    torch.rand(4, device="cuda")
    restore_rng_state(load_latest_checkpoint(tmp_path)["rng"])
    assert torch.rand(4, device="cuda").tolist() == first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deterministic_mode_allows_cublas_matmul() -> None:
    try:
        seed_everything(0, deterministic=True)
        x = torch.randn(64, 64, device="cuda")
        first = (x @ x).sum().item()
        assert (x @ x).sum().item() == first
    finally:
        seed_everything(0, deterministic=False)
