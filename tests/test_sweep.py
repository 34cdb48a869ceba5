"""The data-efficiency sweep on a tiny fixture: 2 fractions x 2 regimes (frozen probe on the feature cache,
full fine-tuning of timm's ``test_efficientnet`` at 32 px) x 2 seeds, through the train stage's functions."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import DatasetDict

from pipelines.sweep import resolve_settings
from shared.config import ParamsError, materialize, parse_params
from shared.sweep.curves import crossovers, curves
from shared.sweep.subsets import epoch_rows, stratified_indices

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_stratified_indices_are_nested_and_keep_every_class() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    small = stratified_indices(labels, 0.1, seed=3, min_per_class=2)
    large = stratified_indices(labels, 0.5, seed=3, min_per_class=2)
    assert np.bincount(labels[small]).tolist() == [8, 2]
    assert np.bincount(labels[large]).tolist() == [40, 10]
    assert set(small) <= set(large)
    assert np.bincount(labels[stratified_indices(labels, 0.01, 0, 2)]).tolist() == [2, 2]  # the floor
    assert len(stratified_indices(labels, 1.0, 0, 2)) == 100
    assert not np.array_equal(stratified_indices(labels, 0.1, 0, 2), small)  # the seed matters


def test_epoch_rows_repeat_a_small_subset_up_to_min_steps() -> None:
    idx = np.array([3, 5, 9, 11, 20])
    assert np.array_equal(epoch_rows(idx, batch_size=4, epochs=2, min_steps=0), idx)  # off: as is
    rows = epoch_rows(idx, batch_size=4, epochs=2, min_steps=10)  # >= 5 batches of 4 per epoch
    assert len(rows) == 20 and np.array_equal(np.bincount(rows)[idx], [4] * 5)  # every item equally often
    assert np.array_equal(epoch_rows(np.arange(100), batch_size=4, epochs=2, min_steps=10), np.arange(100))
    assert len(epoch_rows(idx, batch_size=4, epochs=3, min_steps=10)) == 20  # ceil(10 / 3) = 4 batches


def test_crossover_interpolates_in_log_space() -> None:
    points = []
    for regime, values in {"frozen": [0.70, 0.75, 0.78], "full": [0.60, 0.76, 0.90],
                           "lora": [0.80, 0.85, 0.90], "scratch": [0.50, 0.60, 0.70]}.items():
        for fraction, n, v in zip((0.1, 0.4, 1.0), (10, 40, 100), values, strict=True):
            points += [{"regime": regime, "fraction": fraction, "n_train": n, "m": v + d} for d in (-0.01, 0.01)]
    curve = curves(points, "m")
    assert curve["full"][0] == {"fraction": 0.1, "n_train": 10, "mean": pytest.approx(0.60), "min": 0.59,
                                "max": 0.61, "seeds": 2}
    cross = crossovers(curve)
    assert cross["lora"]["status"] == "always_above" and cross["lora"]["n_train"] == 10
    assert cross["scratch"] == {"status": "never", "n_train": None, "fraction": None, "first_n_above": None}
    assert cross["full"]["status"] == "crosses" and cross["full"]["first_n_above"] == 40
    # mean difference -0.10 at n=10 and +0.01 at n=40: zero at 10 * 4 ** (0.10 / 0.11)
    assert cross["full"]["n_train"] == pytest.approx(10 * 4 ** (0.10 / 0.11), abs=0.1)


def test_sweep_params_are_validated() -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert parse_params(raw).sweep.fractions == [0.01, 0.05, 0.1, 0.25, 1.0]  # optional, with defaults
    for bad in ({"fractions": [0.0]}, {"fractions": [1.5]}, {"regimes": ["lp_ft"]}, {"seeds": [1, 1]},
                {"min_steps": -1}, {"unknown": 1}):
        with pytest.raises(ParamsError, match="sweep"):
            parse_params({**raw, "sweep": bad})
    base = parse_params(raw).sweep  # command-line overrides are validated the same way
    cli = {"fractions": None, "regimes": None, "seeds": [4], "min_steps": 50}
    assert resolve_settings(base, Namespace(**cli)).model_dump() == {**base.model_dump(), "seeds": [4], "min_steps": 50}
    with pytest.raises(ParamsError, match="min_steps"):
        resolve_settings(base, Namespace(**{**cli, "min_steps": -1}))


def test_sweep_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    image_dd_factory: Callable[..., DatasetDict]) -> None:
    """2 fractions x {frozen, full} x 2 seeds: JSON (points, curves, crossover), PNG, MLflow runs, resume.

    About 13 s on 2 idle cores (33 s beside a training run), so not marked slow."""
    from mlflow import MlflowClient

    from pipelines import extract, sweep

    root = tmp_path / "project"
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {"seed": 0, "domains": ["vision"], "regimes": ["frozen", "full"], "vision": raw["vision"],
           "sweep": {"fractions": [0.25, 1.0], "regimes": ["frozen", "full"], "seeds": [0, 1], "min_per_class": 2,
                     "min_steps": 2}}
    raw["vision"]["model"] = {"backbone": "test_efficientnet", "pretrained": False, "image_size": 32,
                              "extract_batch_size": 32}
    raw["vision"]["train"].update(epochs=1, batch_size=8, max_steps_per_epoch=2)
    raw["vision"]["regimes"]["frozen"] = {"C_grid": [1.0], "max_iter": 200}
    params_file = root / "params.yaml"
    root.mkdir()
    params_file.write_text(yaml.safe_dump(materialize(parse_params(raw)), sort_keys=False))
    image_dd_factory(n_train=32, n_eval=16).save_to_disk(str(root / "data" / "prepared" / "vision"))
    assert extract.main(["--domain", "vision", "--params", str(params_file)]) == 0

    t0 = time.perf_counter()
    assert sweep.main(["--domain", "vision", "--params", str(params_file)]) == 0
    print(f"sweep of 8 points: {time.perf_counter() - t0:.1f} s")
    report = json.loads((root / "reports" / "sweep" / "vision.json").read_text())
    assert report["status"] == "complete" and report["primary_metric"] == "accuracy"
    assert report["n_train_total"] == 32
    assert {(p["regime"], p["fraction"], p["seed"]) for p in report["points"]} == \
        {(r, f, s) for r in ("frozen", "full") for f in (0.25, 1.0) for s in (0, 1)}
    for p in report["points"]:
        assert p["n_train"] == (8 if p["fraction"] == 0.25 else 32)
        # min_steps 2 with 1 epoch of batch 8: the 8 labelled images are seen twice, the 32 once
        assert p["epoch_rows"] == (16 if (p["regime"], p["fraction"]) == ("full", 0.25) else p["n_train"])
        assert 0.0 <= p["test_accuracy"] <= 1.0 and p["trainable_params"] > 0
    for regime in ("frozen", "full"):
        rows = report["curves"][regime]
        assert [r["n_train"] for r in rows] == [8, 32] and all(r["seeds"] == 2 for r in rows)
        assert all(r["min"] <= r["mean"] <= r["max"] for r in rows)
    assert set(report["crossover"]) == {"full"}
    assert report["crossover"]["full"]["status"] in ("crosses", "always_above", "never")
    png = root / "reports" / "sweep" / "vision.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vision-sweep")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sweep") == "true" and r.data.tags.get("run_kind") != "sweep"]
    assert len(parent) == 1 and len(children) == 8
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in children)
    assert not (root / "checkpoints").exists() or not any((root / "checkpoints").rglob("*.safetensors"))

    # a re-run with the same settings reuses every point (no new child run)
    assert sweep.main(["--domain", "vision", "--params", str(params_file), "--seeds", "0", "1"]) == 0
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 10 and sum(r.data.tags.get("run_kind") == "sweep" for r in runs) == 2


@pytest.mark.skipif(shutil.which("dvc") is None, reason="needs the dvc executable")
def test_sweep_is_an_opt_in_dvc_stage_group() -> None:
    """``sweep/dvc.yaml`` expands over ``sweep.domains``; the default ``dvc repro`` (top-level dvc.yaml) has
    no sweep stage."""
    def stages(target: str) -> list[str]:
        out = subprocess.run(["dvc", "stage", "list", "--name-only", target], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout
        return out.split()

    domains = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["sweep"]["domains"]
    assert stages("sweep/dvc.yaml") == [f"sweep/dvc.yaml:sweep@{d}" for d in domains]
    assert not [s for s in stages("dvc.yaml") if "sweep" in s]
