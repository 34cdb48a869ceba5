"""Resume only what the same inputs produced (RELIABILITY 15): the train stage's checkpoint folder is keyed by
the content of its data inputs and of the code it runs, so a killed run whose data or code changed starts
afresh, and the folders of abandoned keys are pruned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import train
from pipelines.common import parse_stage

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with params.yaml and stand-in prepared data and features of ``vision``."""
    root = tmp_path / "project"
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "vision")}
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=["full"])
    (root / "data" / "prepared" / "vision" / "train").mkdir(parents=True)
    (root / "data" / "features" / "vision" / "tf_efficientnet_lite0").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "data" / "prepared" / "vision" / "train" / "data.arrow").write_bytes(bytes(range(256)) * 4)
    (root / "data" / "features" / "vision" / "tf_efficientnet_lite0" / "train.safetensors").write_bytes(b"\0" * 64)
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
    return root


def checkpoint_folder() -> Path:
    """The train stage's checkpoint folder for train@vision/tf_efficientnet_lite0-full of the project."""
    return train.checkpoint_dir(parse_stage(["--domain", "vision", "--regime", "full"], "", with_regime=True,
                                            with_candidate=True))


def test_changed_prepared_data_gets_a_fresh_checkpoint_folder(project: Path) -> None:
    first = checkpoint_folder()
    assert first == checkpoint_folder(), "the same inputs must give the same key"
    first.mkdir(parents=True)
    (first / "ckpt-00000000.pt").write_bytes(b"epoch 0")
    labels = project / "data" / "prepared" / "vision" / "train" / "data.arrow"
    labels.write_bytes(bytes(255 - b for b in labels.read_bytes()))  # every byte flipped, same size
    second = checkpoint_folder()
    assert second != first and second.parent == first.parent
    assert not first.exists(), "the abandoned key's checkpoints are pruned"


def test_changed_code_gets_a_fresh_checkpoint_folder(project: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The code digest reads the files of the train stage's import closure: edit a copy of the tree."""
    code = tmp_path / "code"
    for package in ("shared", "domains", "pipelines"):
        shutil.copytree(REPO_ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(train, "CODE_ROOT", code)
    first = checkpoint_folder()
    imported = code / "shared" / "regimes" / "finetune.py"  # imported by the full regime
    imported.write_text(imported.read_text() + "\n# a fix\n")
    second = checkpoint_folder()
    assert second != first
    unrelated = code / "shared" / "reporting" / "html.py"  # not imported by the train stage
    unrelated.write_text(unrelated.read_text() + "\n# cosmetic\n")
    assert checkpoint_folder() == second
