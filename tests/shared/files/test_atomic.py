"""Same inputs, same bytes (RELIABILITY 17): safetensors files written by the project are reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file as load_torch

from shared.evaluation.predictions import Predictions
from shared.files.atomic import write_safetensors

METADATA = {"regime": "full", "contents": "trainable parameters and buffers", "format": "pt", "z": "1"}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[8 : 8 + int.from_bytes(data[:8], "little")]


def test_torch_writes_with_metadata_are_byte_identical(tmp_path: Path) -> None:
    tensors = {"head.weight": torch.arange(6.0).reshape(2, 3), "head.bias": torch.ones(2, dtype=torch.float64),
               "bn.num_batches_tracked": torch.tensor(3)}
    paths = [tmp_path / f"w{i}.safetensors" for i in range(12)]  # safetensors alone gives several orders
    for path in paths:
        write_safetensors(path, tensors, metadata=METADATA)
    assert len({digest(path) for path in paths}) == 1
    loaded = load_torch(str(paths[0]))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(str(paths[0]), framework="pt") as f:
        assert f.metadata() == METADATA
    assert len(header(paths[0])) % 8 == 0
    parsed = json.loads(header(paths[0]))
    assert list(parsed) == sorted(parsed) and list(parsed["__metadata__"]) == sorted(METADATA)


def test_numpy_writes_are_byte_identical(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray] = {"features": np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32),
              "labels": np.arange(5, dtype=np.int64)}
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_safetensors(first, arrays, metadata={"b": "2", "a": "1"})
    write_safetensors(second, arrays, metadata={"a": "1", "b": "2"})
    assert first.read_bytes() == second.read_bytes()
    loaded = load_numpy(str(first))
    assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())


def test_predictions_files_are_byte_identical(tmp_path: Path) -> None:
    probs = np.full((4, 2), 0.5, dtype=np.float32)
    preds = Predictions(probs, np.arange(4) % 2, probs, np.arange(4) % 2)
    preds.save(tmp_path / "a.safetensors")
    preds.save(tmp_path / "b.safetensors")
    assert digest(tmp_path / "a.safetensors") == digest(tmp_path / "b.safetensors")
    again = Predictions.load(tmp_path / "a.safetensors")
    assert np.array_equal(again.test_probs, probs)

