"""Same run, same bytes (RELIABILITY 17): the train stage's weight file does not change between identical runs,
so DVC's hashes and run cache agree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from datasets import DatasetDict

from pipelines.common import Stage, parse_stage

REPO_ROOT = Path(__file__).resolve().parents[3]
RUNS = 6  # the old two-key metadata came out in either order: 6 identical runs all agreeing by chance is 1/32


@pytest.fixture()
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> Iterator[Stage]:
    """A ``train@vision-full`` stage on timm's tiny ``test_efficientnet`` at 32 px, one optimiser step."""
    from accelerate.state import AcceleratorState, GradientState

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "vision")}
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=["full"])
    raw["vision"]["model"].update(backbone="test_efficientnet", pretrained=False, image_size=32)
    raw["vision"]["train"].update(epochs=1, max_steps_per_epoch=1, batch_size=8, num_workers=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield parse_stage(["--domain", "vision", "--regime", "full"], "", with_regime=True)
    AcceleratorState._reset_state(reset_partial_state=True)  # later tests pick their own device
    GradientState._reset_state()
    torch.use_deterministic_algorithms(False)


def test_identical_train_runs_write_identical_weights(stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     image_dd_factory: Callable[..., DatasetDict]) -> None:
    from shared.regimes.base import RegimeContext
    from shared.training import run as training_run

    monkeypatch.setattr(training_run, "log_metrics", lambda *args, **kwargs: None)  # no MLflow run here
    dd = image_dd_factory(n_train=16, n_eval=8)
    digests = set()
    for run in range(RUNS):
        out = tmp_path / f"out{run}"
        out.mkdir()
        ctx = RegimeContext(domain=stage.domain, seed=stage.params.seed, data=dd, features_dir=tmp_path / "none",
                            checkpoints=tmp_path / f"ckpt{run}")
        training_run.run_regime(stage.regime_plugin, ctx, out)
        digests.add(hashlib.sha256((out / "weights.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
