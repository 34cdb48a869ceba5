"""The train stage, unchanged, on two CPU processes (DDP, gloo) under ``accelerate launch``.

One tiny project (embedded MNIST, 64 training images at 32 px, timm ``test_efficientnet`` from random init,
one epoch) is fetched and prepared in-process, trained once in-process as the single-process reference,
then trained again with two processes. Checks, per regime (``partial``, whose frozen blocks must not break
DDP; ``full`` in the slow suite): exactly one MLflow run, FINISHED; outputs written once, by the main process; gathered
predictions cover the prepared test split exactly once, in order, with the prepared label map; and the
metrics and weights are close to the single-process run (same data, same seed; the batches differ).

``accelerate launch --cpu --num_processes 2`` starts a single process unless an MPI hostfile is configured
(accelerate's multi-CPU mode is MPI based), so the launch here is ``accelerate launch --multi_gpu`` with
CUDA hidden: torchrun starts two workers and the stage picks the gloo backend on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from shared.config import materialize, parse_params

REPO_ROOT = Path(__file__).resolve().parents[1]
REGIMES = ("full", "partial")

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate launcher")


def tiny_params() -> dict[str, Any]:
    """The repository's vision section cut down to a CPU-sized DDP check."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "vision")}
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=list(REGIMES))
    vision = raw["vision"]
    vision["data"].update(dataset="mnist", max_train_samples=64, max_eval_samples=40)
    vision["model"].update(backbone="test_efficientnet", pretrained=False, image_size=32, extract_batch_size=64)
    vision["train"].update(epochs=1, batch_size=8, num_workers=0)
    vision["evaluate"] = {"bootstrap": 20}
    return materialize(parse_params(raw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(TRANSFERLAB_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return env


def ddp_train(root: Path, regime: str) -> float:
    """``accelerate launch`` the train stage on two CPU processes; returns its wall time."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           "-m", "pipelines.train", "--domain", "vision", "--regime", regime]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=launch_env(root), capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"DDP train@vision-{regime} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return seconds


def reset_accelerate() -> None:
    """Forget the in-process accelerate state, so later tests may pick their own device."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@contextmanager
def in_process(root: Path) -> Iterator[None]:
    """The stage environment of ``root`` for stages run in this process, undone afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERLAB_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two roots with the same prepared data: ``single`` (each test trains its regime there in-process) and
    ``ddp``."""
    from pipelines import fetch, prepare

    single = tmp_path_factory.mktemp("single")
    (single / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    with in_process(single):
        assert fetch.main(["--domain", "vision"]) == 0
        assert prepare.main(["--domain", "vision"]) == 0
    ddp = tmp_path_factory.mktemp("ddp")
    shutil.copy2(single / "params.yaml", ddp / "params.yaml")
    shutil.copytree(single / "data" / "prepared", ddp / "data" / "prepared")
    yield {"single": single, "ddp": ddp}


def read_outputs(root: Path, regime: str) -> tuple[dict[str, Any], Any, dict[str, torch.Tensor]]:
    from shared.evaluation.predictions import Predictions

    out = root / "models" / "vision" / "tf_efficientnet_lite0" / regime
    return (json.loads((out / "run.json").read_text()), Predictions.load(out / "predictions.safetensors"),
            load_file(str(out / "weights.safetensors")))


@pytest.mark.parametrize("regime", [pytest.param("full", marks=pytest.mark.slow), "partial"])
def test_train_stage_on_two_cpu_processes(projects: dict[str, Path], regime: str) -> None:
    from datasets import load_from_disk
    from mlflow import MlflowClient

    from pipelines import train

    with in_process(projects["single"]):  # the single-process reference
        try:
            assert train.main(["--domain", "vision", "--regime", regime]) == 0
        finally:
            reset_accelerate()
    root = projects["ddp"]
    seconds = ddp_train(root, regime)
    print(f"DDP train@vision-{regime} on 2 CPU processes: {seconds:.1f} s")

    # exactly one MLflow run, opened by the main process, FINISHED, with per-epoch metrics
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vision")
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=100)
            if r.data.tags.get("regime") == regime]
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED", run.data.tags.get("error")
    assert {"train_loss", "val_loss", "val_score"} <= set(run.data.metrics)

    # outputs written once, by the main process: no staging leftovers, checkpoints cleaned up
    info, preds, weights = read_outputs(root, regime)
    assert info["run_id"] == run.info.run_id and info["processes"] == 2
    folder = root / "models" / "vision" / "tf_efficientnet_lite0"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert not any((root / "checkpoints" / "vision" / "tf_efficientnet_lite0" / regime).glob("*/ckpt-*"))

    # gathered predictions: the prepared test split once, in order, with the prepared label map
    prepared = load_from_disk(str(root / "data" / "prepared" / "vision"))
    names = prepared["test"].features["label"].names
    assert names == prepared["train"].features["label"].names
    np.testing.assert_array_equal(preds.test_labels, np.asarray(prepared["test"]["label"]))
    np.testing.assert_array_equal(preds.val_labels, np.asarray(prepared["validation"]["label"]))
    assert preds.test_probs.shape == (len(prepared["test"]), len(names))
    np.testing.assert_allclose(preds.test_probs.sum(1), 1.0, atol=1e-4)

    # close to the single-process run: same parameters kept, same sample count, similar numbers
    ref_info, ref_preds, ref_weights = read_outputs(projects["single"], regime)
    assert info["processes"] == 2 and ref_info["processes"] == 1
    assert (info["trainable_params"], info["total_params"]) == (ref_info["trainable_params"],
                                                                 ref_info["total_params"])
    assert abs(info["train_samples_per_second"] * info["train_seconds"] - len(prepared["train"])) <= 8
    assert set(weights) == set(ref_weights)
    for key, value in weights.items():
        if value.is_floating_point() and "running_" not in key:  # BN statistics see other batches
            diff = (value - ref_weights[key]).abs().max().item()
            assert diff < 0.05, f"{key}: DDP and single-process weights differ by {diff}"
    for split in ("val", "test"):
        ddp_probs, ref_probs = getattr(preds, f"{split}_probs"), getattr(ref_preds, f"{split}_probs")
        accuracy = (ddp_probs.argmax(1) == preds.test_labels if split == "test" else
                    ddp_probs.argmax(1) == preds.val_labels).mean()
        ref_accuracy = (ref_probs.argmax(1) == (ref_preds.test_labels if split == "test" else
                                                ref_preds.val_labels)).mean()
        assert abs(accuracy - ref_accuracy) <= 0.25, (split, accuracy, ref_accuracy)
        assert np.abs(ddp_probs - ref_probs).mean() < 0.1, split
