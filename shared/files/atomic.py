"""Atomic file writes: a temp file in the same folder, fsync, ``os.replace``; safetensors files with stable
bytes; and the error a full disk raises."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DiskFullError(OSError):
    """No space left on the device holding a file we write (``errno.ENOSPC``, the file as ``filename``)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", str(path))


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success fsync it and move it over ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(dest: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_safetensors(dest: Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Write numpy arrays or torch tensors as a safetensors file, atomically, with reproducible bytes.

    safetensors keeps ``metadata`` in a hash map whose order changes from write to write, so the same
    tensors and metadata gave different files (and DVC hashes); the header is rewritten here as JSON with
    sorted keys, padded with spaces to a multiple of 8 bytes as safetensors pads it.
    """
    import numpy as np

    if all(isinstance(value, np.ndarray) for value in tensors.values()):
        from safetensors.numpy import save as save_numpy

        data = save_numpy(dict(tensors), metadata=metadata)
    else:
        from safetensors.torch import save as save_torch

        data = save_torch(dict(tensors), metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(memoryview(data)[8 + size :])
