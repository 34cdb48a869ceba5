"""A domain that leaves a regime out (``<domain>.regimes.<regime>: false``): DVC's ``matrix`` still expands the
pair, so its train and evaluate stages write the outputs they declare, saying why, and nothing else: no
training, no MLflow run; compare reports the pair as not run instead of failing on its missing metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines import evaluate, train
from shared.config import materialize, parse_params

REPO = Path(__file__).resolve().parents[2]
LITE0 = "tf_efficientnet_lite0"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project whose params run frozen and lora, vision leaving lora out."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=["frozen", "lora"])
    raw["vision"]["regimes"]["lora"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(materialize(parse_params(raw)), sort_keys=False))
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_left_out_pair_writes_its_outputs_and_trains_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--domain", "vision", "--regime", "lora", "--params", str(project / "params.yaml")]
    assert train.main(args) == 0  # no prepared data exists: reading any would fail
    record = json.loads((project / "models" / "vision" / LITE0 / "lora" / "left_out.json").read_text())
    assert record == {"domain": "vision", "backbone": LITE0, "regime": "lora",
                      "left_out": "vision.regimes.lora is false: vision does not run lora"}
    assert sorted(p.name for p in (project / "models" / "vision" / LITE0 / "lora").iterdir()) == ["left_out.json"]
    assert evaluate.main(args) == 0
    metrics = json.loads((project / "metrics" / "vision" / LITE0 / "lora.json").read_text())
    assert metrics["left_out"] == record["left_out"] and "test" not in metrics
    assert [p.name for p in (project / "plots" / "vision" / LITE0 / "lora").iterdir()] == ["left_out.png"]
    assert not (project / "mlflow.db").exists(), "a left-out pair opened the tracking store"
    out = capsys.readouterr().out
    assert "train: vision.regimes.lora is false" in out and "nothing evaluated" in out


def test_compare_reads_the_pairs_that_run_only(project: Path) -> None:
    from pipelines.compare import inputs_from_files
    from shared.config import load_params

    with pytest.raises(SystemExit, match="metrics missing for") as info:
        inputs_from_files(load_params(project / "params.yaml"))
    assert f"vision/{LITE0}/frozen.json" in str(info.value) and "lora" not in str(info.value)


def test_predict_names_why_a_left_out_regime_has_no_model(project: Path) -> None:
    from pipelines.cli import model_uri

    args = ["--domain", "vision", "--regime", "lora", "--params", str(project / "params.yaml")]
    assert evaluate.main(args) == 0
    with pytest.raises(SystemExit, match="no model: vision.regimes.lora is false"):
        model_uri("vision", None, "lora", LITE0)
