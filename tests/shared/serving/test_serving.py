"""Using the winner for real: compare's registration (``@champion``, ``@cheapest``; a re-run makes no new
version), ``transferlab predict`` on files, a folder, a CSV column and stdin (a bad input is an error
row, the exit code says so), and ``mlflow models serve`` of ``models:/...@champion`` answering with the
train stage's test probabilities and a 4xx that says what was expected on a malformed request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from shared.config import ModelParams
from shared.serving.package import probability_columns, raw_inputs
from shared.serving.server import dataframe_split, invoke, model_server
from shared.testing.serving import fresh_store, train_tiny_package
from tests.conftest import make_image_dd


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny image model logged twice (two runs: "full" and "frozen") in a fresh store, registered by
    :func:`register_winners` as the winner and the cheapest regime of domain ``tiny``."""
    from shared.serving.mlflow_model import log_package
    from shared.serving.registration import register_winners

    root = tmp_path_factory.mktemp("serving")
    uri = fresh_store(root)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    dd = make_image_dd()
    params = ModelParams(backbone="test_efficientnet", pretrained=False, image_size=32)
    package, probs = train_tiny_package(root / "full", "image", params, dd, "full")
    items = raw_inputs(dd["test"])
    mlflow.set_tracking_uri(uri)
    uris = {}
    for regime in ("full", "frozen"):
        with mlflow.start_run(run_name=regime):
            uris[regime] = log_package(package, items[0], threshold=0.5).model_uri
    rows = [{"domain": "tiny", "regime": "full", "backbone": "test_efficientnet", "primary_metric": "auroc",
             "primary": 0.9, "primary_ci_low": 0.8, "primary_ci_high": 0.95, "winner": True, "pareto_time": True,
             "train_seconds": 10.0, "model_uri": uris["full"], "run_id": "r1"},
            {"domain": "tiny", "regime": "frozen", "backbone": "test_efficientnet", "primary_metric": "auroc",
             "primary": 0.8, "primary_ci_low": 0.7, "primary_ci_high": 0.9, "winner": False, "pareto_time": True,
             "train_seconds": 1.0, "model_uri": uris["frozen"], "run_id": "r2"}]
    versions = register_winners(rows, {"git_commit": "abc", "dvc_experiment": ""})
    yield {"uri": uri, "root": root, "dd": dd, "probs": probs, "items": items, "rows": rows, "versions": versions}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_registration_sets_aliases_and_is_idempotent(registered: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from shared.serving.registration import register_winners

    assert registered["versions"] == {"tiny": {"champion": "1", "cheapest": "2"}}
    client = MlflowClient(registered["uri"])
    champion = client.get_model_version_by_alias("transferlab-tiny", "champion")
    assert champion.tags["regime"] == "full" and champion.tags["test_auroc_ci95"] == "[0.8000, 0.9500]"
    assert champion.tags["git_commit"] == "abc"
    assert register_winners(registered["rows"], {"git_commit": "abc", "dvc_experiment": ""}) == registered["versions"]
    assert len(client.search_model_versions("name = 'transferlab-tiny'")) == 2, "a re-run made a new version"


def transferlab(*args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_predict_files_folder_table_and_stdin(registered: dict[str, Any], tmp_path: Path) -> None:
    import csv

    items, probs = registered["items"], registered["probs"]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, data in enumerate(items[:4]):
        (folder / f"{i}.png").write_bytes(data)
    (folder / "broken.png").write_bytes(b"not a png")
    (tmp_path / "table.csv").write_text("image\nimages/0.png\nimages/1.png\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], "PYTHONPATH": str(Path.cwd())}
    out = tmp_path / "preds.csv"
    proc = transferlab("predict", "tiny", str(folder), str(folder / "3.png"), str(tmp_path / "table.csv"), "-",
                       "missing.png", "--out", str(out), "--no-progress", cwd=tmp_path, env=env,
                       stdin=f"{folder / '2.png'}\n")
    assert proc.returncode == 1, proc.stderr  # two inputs failed
    rows = list(csv.DictReader(out.open()))
    columns = probability_columns(["class0", "class1"])
    assert list(rows[0]) == ["id", *columns, "label", "error"]
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == 5 + 1 + 2 + 1 + 1
    assert "cannot decode" in by_id[str(folder / "broken.png")]["error"]
    assert "no such file" in by_id["missing.png"]["error"]
    expected = {str(folder / "0.png"): 0, str(folder / "3.png"): 3, f"{tmp_path / 'table.csv'}:2": 1, "stdin:1": 2}
    for key, i in expected.items():
        got = [float(by_id[key][c]) for c in columns]
        np.testing.assert_allclose(got, probs[i], atol=1e-5, err_msg=key)
        assert by_id[key]["error"] == ""
    assert "8 of 10 item(s) scored" in proc.stderr


def test_mlflow_models_serve_champion(registered: dict[str, Any], tmp_path: Path) -> None:
    columns = probability_columns(["class0", "class1"])
    items = registered["items"]
    with model_server("models:/transferlab-tiny@champion", registered["uri"], tmp_path / "server.log") as base:
        status, body = invoke(base, dataframe_split("image", items))
        assert status == 200, body
        frame = body["predictions"]
        got = np.array([[row[c] for c in columns] for row in frame])
        np.testing.assert_allclose(got, registered["probs"], atol=1e-5)
        assert all(row["label"] in ("class0", "class1") for row in frame)

        status, body = invoke(base, dataframe_split("picture", items[:1]))
        assert 400 <= status < 500 and "image" in body.get("message", ""), (status, body)
        status, body = invoke(base, dataframe_split("image", [b"junk"]))
        assert 400 <= status < 500 and "cannot decode" in body.get("message", ""), (status, body)
        status, body = invoke(base, dataframe_split("image", items[1:2]))
        assert status == 200, "the server stopped serving after bad requests"
        np.testing.assert_allclose([body["predictions"][0][c] for c in columns], registered["probs"][1], atol=1e-5)
