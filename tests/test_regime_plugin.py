"""A regime from another package, through the ``transferlab.regimes`` entry point alone: installed into a
temporary site folder (a real ``.dist-info`` with ``entry_points.txt``), listed by ``transferlab regimes``,
and run end to end (``transferlab run``: fetch, prepare, train, evaluate) with no change to this repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = '''
"""A throwaway regime: only the classifier head trains."""

from typing import ClassVar

from shared.config import TrainOverrides
from shared.regimes.finetune import FineTune, train_only


class HeadOnly(FineTune[TrainOverrides]):
    name: ClassVar[str] = "headonly"
    description: ClassVar[str] = "the head alone trains (a plugin regime)"
    Params = TrainOverrides

    def select(self, model, ctx):
        train_only(model, set())
'''


def install_plugin(site: Path) -> None:
    """What ``pip install`` of a package declaring the entry point leaves in site-packages."""
    (site / "tl_headonly").mkdir(parents=True)
    (site / "tl_headonly" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "tl_headonly-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tl-headonly\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[transferlab.regimes]\nheadonly = tl_headonly:HeadOnly\n")


def tiny_params() -> dict:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "vision")}
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=["headonly"])
    raw["vision"]["data"].update(dataset="mnist", max_train_samples=64, max_eval_samples=40)
    raw["vision"]["model"].update(image_size=32, extract_batch_size=64)
    raw["vision"]["train"].update(epochs=1, max_steps_per_epoch=2, batch_size=8)
    raw["vision"]["regimes"]["headonly"] = {"lr": 0.01}
    raw["vision"]["evaluate"] = {"bootstrap": 20}
    return raw


def test_a_regime_installed_from_another_package_runs_end_to_end(tmp_path: Path) -> None:
    site, project = tmp_path / "site", tmp_path / "project"
    install_plugin(site)
    project.mkdir()
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}", "TRANSFERLAB_ROOT": str(project),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TRANSFERLAB_MIRROR", None)
    listed = subprocess.run([sys.executable, "-m", "pipelines.cli", "regimes"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[0] == "headonly" for line in listed.stdout.splitlines()), listed.stdout
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "vision", "--regime", "headonly",
                          "--params", str(params)], cwd=project, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((project / "metrics" / "vision" / "tf_efficientnet_lite0" / "headonly.json").read_text())
    assert metrics["regime"] == "headonly"
    assert metrics["regime_description"] == "the head alone trains (a plugin regime)"
    assert metrics["trainable_params"] == 1280 * 10 + 10  # EfficientNet-Lite0's head on 10 MNIST classes
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
