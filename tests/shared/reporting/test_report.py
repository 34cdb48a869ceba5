"""The comparison product: ``compare`` over a synthetic 2-domain x 3-regime project (index.html covers every
run and its images exist, winner + paired significance, anchors for PneumoniaMNIST only, MLflow parent
runs), the pure helpers, and the report rebuilt from a real ``mlflow server`` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from datasets import ClassLabel, Dataset, Features

from shared.config import materialize, parse_params
from shared.evaluation.metrics import evaluate_predictions
from shared.evaluation.predictions import Predictions

REPO_ROOT = Path(__file__).resolve().parents[3]
DOMAINS = ("vision", "xray")
REGIMES = ("frozen", "lora", "baseline")
CLASSES = {"vision": ["airplane", "bird", "cat"], "xray": ["normal", "pneumonia"]}
# signal strength of the synthetic probabilities: lora clearly best, baseline clearly worst
QUALITY = {"frozen": 1.2, "lora": 2.5, "baseline": 0.3}
COST = {"frozen": {"trainable_params": 1_281, "total_params": 1_281, "train_seconds": 0.05,
                   "peak_memory_mb": 900.0, "train_samples_per_second": 40_000.0, "extract_precision": "bf16"},
        "lora": {"trainable_params": 60_000, "total_params": 3_500_000, "train_seconds": 30.0,
                 "peak_memory_mb": 1_500.0, "train_samples_per_second": 70.0, "precision": "bf16",
                 "eval_precision": "fp32"},
        "baseline": {"trainable_params": None, "total_params": None, "train_seconds": 0.4,
                     "peak_memory_mb": 800.0, "train_samples_per_second": 5_000.0}}


# --- fixture project ------------------------------------------------------------------------------


def project_params(root: Path, regimes: tuple[str, ...] = REGIMES) -> Path:
    """The repository's params.yaml cut to two domains (xray on PneumoniaMNIST) and a few resamples."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "tracking", *DOMAINS)}
    raw.update(domains=list(DOMAINS), regimes=list(regimes))
    for domain in DOMAINS:
        raw[domain]["evaluate"] = {**raw[domain].get("evaluate", {}), "bootstrap": 200}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(materialize(parse_params(raw)), sort_keys=False))
    return path


def synthetic_predictions(num_classes: int, quality: float, seed: int, n: int = 90) -> Predictions:
    """Softmax of noisy logits with ``quality`` added to the true class; the same labels for every regime."""
    rng = np.random.default_rng(seed)

    def split() -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % num_classes
        logits = rng.normal(size=(n, num_classes))
        logits[np.arange(n), labels] += quality
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probs.astype(np.float32), labels.astype(np.int64)

    (vp, vl), (tp, tl) = split(), split()
    return Predictions(vp, vl, tp, tl)


CANDIDATE = "tf_efficientnet_lite0"  # both domains' one candidate backbone


def write_prepared_test(root: Path, domain: str) -> None:
    """The prepared test split (only its label map is read by evaluate)."""
    names = CLASSES[domain]
    features = Features({"label": ClassLabel(names=names)})
    Dataset.from_dict({"label": list(range(len(names)))}, features=features).save_to_disk(
        str(root / "data" / "prepared" / domain / "test"))


def open_run(domain: str, regime: str, params: Any) -> str:
    """A (domain, regime) MLflow run as the train stage opens it; returns its id."""
    from shared.tracking import tracked_run

    dp = params.domain(domain)
    tags = {"domain": domain, "regime": regime, "backbone": dp.model.name, "dataset": dp.data.dataset,
            "git_commit": "test", "dvc_stage": f"train@{domain}/{dp.model.name}-{regime}", "dvc_experiment": ""}
    with tracked_run(domain, f"{domain}-{dp.model.name}-{regime}", tags=tags) as run:
        return run.info.run_id


def write_train_outputs(root: Path, domain: str, regime: str, run_id: str, seed: int) -> Predictions:
    """What train writes: models/<d>/<r>/{predictions.safetensors,run.json}."""
    preds = synthetic_predictions(len(CLASSES[domain]), QUALITY[regime], seed)
    folder = root / "models" / domain / CANDIDATE / regime
    folder.mkdir(parents=True, exist_ok=True)
    preds.save(folder / "predictions.safetensors")
    history = [{"train_loss": 0.9, "val_loss": 0.8}, {"train_loss": 0.6, "val_loss": 0.7}] if regime == "lora" else []
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "domain": domain, "regime": regime,
                                                 **COST[regime], **({"history": history} if history else {})}))
    return preds


def write_metrics(root: Path, domain: str, regime: str, run_id: str, preds: Predictions, params: Any) -> None:
    """metrics/<d>/<r>.json as evaluate writes it (same keys; no plots)."""
    from shared.registry import get_domain

    dp = params.domain(domain)
    cls = get_domain(domain)
    result = evaluate_predictions(preds.val_labels, preds.val_probs, preds.test_labels, preds.test_probs,
                                  task=cls.task, class_names=CLASSES[domain], params=dp.evaluate, seed=params.seed)
    metrics = {"domain": domain, "candidate": dp.model.name, "regime": regime,
               "backbone": "pixels+logreg" if regime == "baseline" else dp.model.backbone,
               "dataset": dp.data.dataset, "task": cls.task, "primary_metric": cls.primary_metric,
               "class_names": CLASSES[domain], **COST[regime], "run_id": run_id, **result}
    path = root / "metrics" / domain / dp.model.name / f"{regime}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root with params, MLflow runs, train outputs and metrics JSONs for 2 domains x 3 regimes."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(root)  # the new store's artifacts (./mlruns) stay in the project, not the checkout
    params = parse_params(yaml.safe_load(project_params(root).read_text()))
    for i, domain in enumerate(DOMAINS):
        for j, regime in enumerate(REGIMES):
            run_id = open_run(domain, regime, params)
            preds = write_train_outputs(root, domain, regime, run_id, seed=10 * i + j)
            write_metrics(root, domain, regime, run_id, preds, params)
    return root


class _Html(HTMLParser):
    """Images, section ids, and the text under each ``<h2 id=...>``."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: dict[str, str] = {}
        self.current: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        if tag == "h2":
            self.current = a.get("id") or self.current
            if a.get("id"):
                self.sections[a["id"]] = ""
        if tag in ("script", "link"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.sections[self.current] += data


# --- compare from local files ---------------------------------------------------------------------


def test_compare_builds_the_report(project: Path) -> None:
    """Every domain x regime in index.html, images exist, winner + significance, anchors for xray only,
    and MLflow parent runs (one per domain, reused on a re-run)."""
    from mlflow import MlflowClient

    from pipelines import compare

    t0 = time.perf_counter()
    assert compare.main(["--params", str(project / "params.yaml")]) == 0
    print(f"compare: {time.perf_counter() - t0:.1f} s")
    reports = project / "reports"
    for name in ("index.html", "comparison.md", "comparison.json", "comparison.png"):
        assert (reports / name).stat().st_size > 0, name

    page = _Html()
    page.feed((reports / "index.html").read_text())
    assert not page.external, "index.html must be self-contained (no scripts or stylesheets)"
    assert page.images, "index.html shows no figure"
    for src in page.images:
        assert not src.startswith(("/", "http")) and src.startswith("figures/"), src
        assert (reports / src).is_file(), f"index.html references a missing image {src}"
    assert set(page.sections) == set(DOMAINS)
    for domain in DOMAINS:
        for regime in REGIMES:
            assert regime in page.sections[domain], f"{domain}/{regime} missing from index.html"
    assert "MedMNIST v2" in page.sections["xray"] and "0.944" in page.sections["xray"]
    assert "MedMNIST" not in page.sections["vision"], "anchors only for the matching dataset"

    rows = json.loads((reports / "comparison.json").read_text())
    assert [(r["domain"], r["regime"]) for r in rows] == [(d, r) for d in DOMAINS for r in REGIMES]
    for domain in DOMAINS:
        sub = {r["regime"]: r for r in rows if r["domain"] == domain}
        assert [r for r, row in sub.items() if row["winner"]] == ["lora"]
        assert sub["lora"]["vs_winner"] is None and sub["lora"]["rank"] == 1
        for regime in ("frozen", "baseline"):
            vs = sub[regime]["vs_winner"]
            assert vs["status"] == "tested" and vs["against"] == "lora"
            assert vs["ci_low"] <= vs["diff"] <= vs["ci_high"] and 0 < vs["p_value"] <= 1
        assert sub["baseline"]["vs_winner"]["significant"] is True  # quality 2.5 vs 0.3 on 90 items
        low, high = sub["lora"]["primary_ci_low"], sub["lora"]["primary_ci_high"]
        assert low is not None and low <= sub["lora"]["primary"] <= high  # accuracy CI computed from predictions
        assert sub["frozen"]["pareto_time"] and sub["lora"]["pareto_time"]
        assert sub["baseline"]["pareto_params"] is False  # no trainable parameters: not on that front
        # the paragraph quotes measured values
        assert f"{sub['lora']['primary']:.3f}" in page.sections[domain]
        # which precision each row ran in (the baseline has no network forward)
        assert (sub["lora"]["precision"], sub["frozen"]["precision"], sub["baseline"]["precision"]) == \
            ("train bf16, eval fp32", "extract bf16", None)
        assert "train bf16, eval fp32" in page.sections[domain]

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])

    def parents() -> dict[str, list[Any]]:
        out = {}
        for domain in DOMAINS:
            exp = client.get_experiment_by_name(domain)
            out[domain] = client.search_runs([exp.experiment_id], "tags.run_kind = 'pipeline'")
        return out

    first = parents()
    for domain in DOMAINS:
        assert len(first[domain]) == 1
        parent = first[domain][0]
        assert parent.info.status == "FINISHED" and parent.data.tags["git_commit"]
        assert "dvc_experiment" in parent.data.tags and parent.data.tags["winner"] == "lora"
        for regime in REGIMES:
            run_id = json.loads((project / "models" / domain / CANDIDATE / regime / "run.json").read_text())["run_id"]
            assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert compare.main(["--params", str(project / "params.yaml")]) == 0
    again = parents()
    assert {d: [r.info.run_id for r in rs] for d, rs in again.items()} == \
        {d: [r.info.run_id for r in rs] for d, rs in first.items()}, "same commit + experiment: parent reused"


def test_compare_names_missing_metrics(project: Path) -> None:
    """A missing metrics file stops compare with its path."""
    from pipelines import compare

    (project / "metrics" / "xray" / CANDIDATE / "lora.json").unlink()
    with pytest.raises(SystemExit, match="lora.json"):
        compare.main(["--params", str(project / "params.yaml")])


# --- pure helpers ---------------------------------------------------------------------------------


def test_pareto_front() -> None:
    from shared.reporting import pareto_front

    points = [(1.0, 0.7), (2.0, 0.9), (3.0, 0.8), (None, 0.95), (1.0, 0.7)]
    assert pareto_front(points) == [True, True, False, False, True]


def _row(regime: str, rank: int, primary: float, seconds: float, significant: bool | None = None) -> dict[str, Any]:
    vs = None if significant is None else {"status": "tested", "significant": significant, "diff": 0.01,
                                          "ci_low": -0.01, "ci_high": 0.03, "p_value": 0.01 if significant else 0.4}
    return {"regime": regime, "label": regime, "rank": rank, "primary": primary, "primary_metric": "accuracy",
            "dataset": "toy",
            "primary_ci_low": primary - 0.02, "primary_ci_high": primary + 0.02, "vs_winner": vs, "n_test": 500,
            "train_seconds": seconds, "pareto_time": False, "trainable_params": 1000}


@pytest.mark.parametrize(("runner_up_seconds", "significant", "advice"), [
    (50.0, False, "Use partial when training cost matters, otherwise full."),  # 2x faster, within noise
    (95.0, False, "Use full."),  # 1.05x faster is no saving worth a recommendation
    (50.0, True, "Use full."),  # the winner's lead is significant
])
def test_what_to_use_paragraph(runner_up_seconds: float, significant: bool, advice: str) -> None:
    from shared.reporting import recommendation

    text = recommendation([_row("full", 1, 0.90, 100.0), _row("partial", 2, 0.89, runner_up_seconds, significant)])
    assert text.startswith("On toy, full has the highest test accuracy: 0.900, 95% CI 0.880-0.920.")
    assert text.endswith(advice), text
    assert ("faster" in text) == advice.startswith("Use partial")


def test_history_csv(tmp_path: Path) -> None:
    from shared.reporting import write_history_csv

    path = write_history_csv([{"train_loss": 0.9, "val_loss": 0.8}, {"train_loss": 0.5, "val_loss": 0.6}],
                             tmp_path / "history.csv")
    assert path.read_text().splitlines() == ["epoch,train_loss,val_loss", "1,0.9,0.8", "2,0.5,0.6"]


def test_anchors_file_is_keyed_by_domain_and_dataset() -> None:
    """Every anchor names its system, setting and source, with published numbers as fractions."""
    from shared.registry import get_domain
    from shared.reporting import anchors_for, load_anchors

    anchors = load_anchors()
    for domain, by_dataset in anchors.items():
        for dataset, block in by_dataset.items():
            assert dataset in get_domain(domain).datasets, f"{domain}/{dataset}"
            assert block["split"] and block["entries"]
            for entry in block["entries"]:
                assert entry["system"] and entry["setting"] and entry["source"]
                assert all(0 < v <= 1 for v in entry["metrics"].values()), entry
    xray = anchors_for(anchors, "xray", "pneumoniamnist")
    assert xray is not None and {"system": "MedMNIST v2, ResNet-18", "setting":
                                 "from scratch, 28 px, full train set (4708 images)",
                                 "source": "Yang et al. 2023, MedMNIST v2",
                                 "metrics": {"auroc": 0.944, "accuracy": 0.854}} in xray["entries"]
    assert anchors_for(anchors, "nlp", "rotten_tomatoes") is None


# --- the report rebuilt from an MLflow tracking server ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout} s")


@pytest.mark.slow  # a real `mlflow server` and HTTP logging: 30 s alone, 50-60 s beside the default suite's e2e repro
def test_report_rebuilt_from_tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs logged over HTTP by train-like runs + the evaluate stage; `transferlab compare --tracking-uri`
    rebuilds the same comparison.json as compare over the local files."""
    from pipelines import cli, compare, evaluate

    regimes = ("frozen", "lora")
    root = tmp_path / "project"
    root.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts", "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.perf_counter()
        try:
            _wait_healthy(url, proc)
        except (RuntimeError, TimeoutError):
            print((tmp_path / "server.log").read_text()[-3000:])
            raise
        print(f"mlflow server up in {time.perf_counter() - t0:.1f} s")
        monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        params_file = project_params(root, regimes)
        params = parse_params(yaml.safe_load(params_file.read_text()))
        for i, domain in enumerate(DOMAINS):
            write_prepared_test(root, domain)
            for j, regime in enumerate(regimes):
                run_id = open_run(domain, regime, params)
                write_train_outputs(root, domain, regime, run_id, seed=10 * i + j)
                assert evaluate.main(["--domain", domain, "--regime", regime, "--params", str(params_file)]) == 0
        assert compare.main(["--params", str(params_file)]) == 0  # local files (+ parent runs on the server)
        remote = tmp_path / "remote"
        assert cli.main(["compare", "--params", str(params_file), "--tracking-uri", url, "--out", str(remote)]) == 0
        print(f"log, evaluate and two compares over HTTP: {time.perf_counter() - t0:.1f} s")
        local_rows = json.loads((root / "reports" / "comparison.json").read_text())
        remote_rows = json.loads((remote / "comparison.json").read_text())
        assert remote_rows == local_rows
        assert all(r["vs_winner"] is None or r["vs_winner"]["status"] == "tested" for r in remote_rows)
        page = _Html()
        page.feed((remote / "index.html").read_text())
        assert all((remote / src).is_file() for src in page.images)
        assert "tracking server" in (remote / "comparison.md").read_text()
        for domain in DOMAINS:  # evaluate's learning-curve CSV, only where run.json has a history
            history = root / "plots" / domain / CANDIDATE / "lora" / "history.csv"
            assert history.read_text().startswith("epoch,train_loss")
            assert not (root / "plots" / domain / CANDIDATE / "frozen" / "history.csv").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
