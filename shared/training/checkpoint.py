"""Resumable training state: atomic, verifiable checkpoints and the RNG states that make resume exact.

``save_checkpoint`` writes ``ckpt-{step:08d}.pt`` through :func:`shared.files.atomic.atomic_path` (temp file in
the same folder, fsync, ``os.replace``), then a sidecar ``ckpt-{step:08d}.json`` holding the size and
SHA-256 of the finished file. A checkpoint without a matching sidecar is incomplete and is skipped on
load. Everything is loaded with ``weights_only=True``, so the state may hold only tensors, primitive
Python values and containers of them (which all torch ``state_dict()`` outputs are).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.files.atomic import DiskFullError, atomic_path, write_json
from shared.files.safe import load_torch_weights

_NAME = re.compile(r"ckpt-(\d{8,})\.pt")


def _checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_step_newest_first(directory: Path) -> list[tuple[int, Path]]:
    found = [
        (int(m.group(1)), p) for p in Path(directory).glob("ckpt-*.pt") if (m := _NAME.fullmatch(p.name))
    ]
    return sorted(found, reverse=True)


def _incomplete_reason(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None if its sidecar vouches for it."""
    try:
        meta = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return "no readable sidecar (the write did not finish)"
    size = path.stat().st_size
    if size != meta.get("size"):
        return f"size {size} != recorded {meta.get('size')} (truncated)"
    if _sha256(path) != meta.get("sha256"):
        return "checksum mismatch (corrupt)"
    return None


def save_checkpoint(directory: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` atomically as ``ckpt-{step:08d}.pt`` plus its sidecar; keep the newest ``keep``.

    On any failure (a full disk included) the previous checkpoints are untouched and no temp file is
    left behind; the error propagates, a full disk as :class:`~shared.files.atomic.DiskFullError` ("no space
    left on device", naming the checkpoint). Returns the checkpoint path.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = _checkpoint_path(directory, step)
    _sidecar(path).unlink(missing_ok=True)  # an old sidecar must never vouch for a new file
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            meta = {"step": step, "size": tmp.stat().st_size, "sha256": _sha256(tmp)}
        write_json(_sidecar(path), meta)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc):
            raise DiskFullError(path) from exc
        raise
    _prune(Path(directory), keep)
    return path


def _disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of space: ``ENOSPC``, or torch's zip writer failing to write
    (``[enforce fail at inline_container.cc:...] . unexpected pos ...``, which hides the ``ENOSPC``)."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError)
    return "inline_container" in str(exc) or "PytorchStreamWriter failed writing" in str(exc)


def _prune(directory: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; delete the rest, incomplete leftovers included."""
    found = [path for _, path in _by_step_newest_first(directory)]
    kept = [path for path in found if _sidecar(path).exists()][:keep]
    for path in found:
        if path not in kept:
            path.unlink(missing_ok=True)
            _sidecar(path).unlink(missing_ok=True)


def load_latest_checkpoint(directory: Path) -> dict | None:
    """The newest complete, loadable checkpoint's state, or None if there is none.

    Incomplete, truncated or unloadable files are skipped with a warning naming them.
    """
    if not Path(directory).is_dir():
        return None
    for _, path in _by_step_newest_first(directory):
        reason = _incomplete_reason(path)
        if reason is None:
            try:
                return load_torch_weights(path)
            except Exception as exc:  # noqa: BLE001 - any load failure means: try the older one
                reason = f"cannot be loaded ({type(exc).__name__}: {exc})"
        warnings.warn(f"skipping checkpoint {path}: {reason}", stacklevel=2)
    return None


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The python, numpy, torch CPU/CUDA (and optional DataLoader ``generator``) RNG states.

    Stored as ints, floats, lists and tensors only, so it round-trips through ``weights_only=True``.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured (and the DataLoader ``generator``, if given)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            n = len(state["cuda"])
            warnings.warn(f"CUDA RNG state of {n} device(s) not restored: the devices differ", stacklevel=2)
    if generator is not None:
        if "generator" not in state:
            raise KeyError("the captured RNG state holds no DataLoader generator state")
        generator.set_state(state["generator"])


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for DataLoaders (``generator=``).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
