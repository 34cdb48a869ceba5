"""End to end: ``dvc repro`` on a copy of the repository with a tiny params file.

Checks the outputs every stage promises, one honest MLflow run per (domain, regime), a no-op re-run in
seconds (only the always-run ``check`` stage), that a key no stage reads fails ``dvc repro`` even with
the pipeline up to date, and that a head-only change (``vision.regimes.frozen.C_grid``) re-runs exactly
train/evaluate of that regime and compare, plus ``check`` (ARCHITECTURE: data flow; RELIABILITY 2, 19).
Your own data too: every image-folder layout and table format as a params section alone.

Speed: every stage is a fresh Python process that spends most of its time importing (torch, PEFT,
datasets, MLflow), mostly on one core. So the default suite's two projects (vision + nlp, and the five
own-data sections) start their first ``dvc repro`` side by side when collection ends
(``tests/conftest.py``) and run while the other tests do; the slow variants' two projects run side by
side as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from shared.config import materialize, parse_params
from shared.registry import list_regimes
from shared.testing import projects

REPO_ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("vision", "nlp")
# The default test's two candidate backbones per domain: vision trains both (finalists: all), so the report
# sets the screening's prediction beside what training measured; nlp trains the one the screening picks.
SCREENED = {"vision": ["tf_efficientnet_lite0", "tf_efficientnet_lite0+random"],
            "nlp": ["sentence-transformers/all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]}
FINALISTS: dict[str, int | str] = {"vision": "all", "nlp": 1}
# The default test keeps one probe and one trained regime per domain: every stage is a fresh Python process
# (~10-15 s, mostly imports, on the shared 2-core machine). The slow variant runs every registered regime.
DEFAULT_REGIMES = ["frozen", "lora"]
ALL_REGIMES = list_regimes()  # every registered regime, built-in or installed
METRIC_KEYS = {"domain", "regime", "backbone", "dataset", "trainable_params", "total_params", "train_seconds",
               "peak_memory_mb", "train_samples_per_second"}
RUNNING = re.compile(r"Running stage '([^']+)'")

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None,
                                reason="needs the dvc and git executables")


def tiny_params(regimes: list[str], screened: bool = False) -> dict[str, Any]:
    """The repository's params.yaml cut down to two embedded datasets, a few dozen items, one short epoch;
    ``screened``: two candidate backbones per domain (:data:`SCREENED`, :data:`FINALISTS`)."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k not in ("xray", "dermatology", "ehr")}
    raw["domains"] = list(DOMAINS)
    raw["regimes"] = regimes
    raw["vision"]["data"]["dataset"] = "mnist"
    raw["vision"]["model"].update(image_size=32, extract_batch_size=64)
    raw["nlp"]["data"]["dataset"] = "rotten_tomatoes"
    raw["nlp"]["model"].update(max_length=32, extract_batch_size=64)
    for domain in DOMAINS:
        raw[domain]["data"].update(max_train_samples=64, max_eval_samples=40)
        raw[domain]["train"].update(epochs=1, max_steps_per_epoch=2, batch_size=8)
        raw[domain]["evaluate"] = {"bootstrap": 20}
        if screened:
            raw[domain]["screen"]["finalists"] = FINALISTS[domain]
    if screened:
        raw["candidates"] = {f"{d}/{c}": d for d in DOMAINS for c in SCREENED[d]}
    return materialize(parse_params(raw))


def trained_runs(project: Path, domains: list[str] | tuple[str, ...], regimes: list[str]
                 ) -> list[tuple[str, str, str]]:
    """(domain, candidate, regime) of every run the project's screening let train, in params order."""
    params = parse_params(yaml.safe_load((project / "params.yaml").read_text()))
    out = []
    for domain in domains:
        for candidate in params.candidates_of(domain):
            record = json.loads((project / "data" / "screening" / domain / f"{candidate}.json").read_text())
            out += [(domain, candidate, r) for r in regimes if record["finalist"] and r in params.regimes_of(domain)]
    return out


def stage_env() -> dict[str, str]:
    """The environment of a user's shell: default paths and store, no mirror, hubs offline."""
    env = dict(os.environ)
    for key in ("TRANSFERLAB_ROOT", "MLFLOW_TRACKING_URI", "TRANSFERLAB_MIRROR", "PYTHONPATH"):
        env.pop(key, None)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure show the tail of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=stage_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


class Repro:
    """A ``dvc repro`` started in the background, so the default suite's two projects run side by side (a
    stage is one Python process that mostly imports: one core each on the 2-core machine)."""

    def __init__(self, project: Path, timeout: float, sources: dict[str, Path] | None = None) -> None:
        self.project, self.timeout, self.started = project, timeout, time.perf_counter()
        self.sources = sources or {}  # an own-data project's user files, by section
        self.log = project.parent / f"{project.name}-repro.log"
        env = stage_env()  # its own precision cache: it may start before the session's cache is set
        env["TRANSFERLAB_CACHE"] = str(project.parent / f"{project.name}-cache")
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, text=True)
        self.result: subprocess.CompletedProcess[str] | None = None

    def wait(self) -> subprocess.CompletedProcess[str]:
        """The finished run (its output as stdout); fails the test as :func:`run` does."""
        if self.result is None:
            left = max(1.0, self.timeout - (time.perf_counter() - self.started))
            try:
                code = self.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"dvc repro in {self.project} ran past {self.timeout:.0f} s:\n"
                            f"{self.log.read_text()[-6000:]}")
            self.result = subprocess.CompletedProcess(["dvc", "repro"], code, self.log.read_text(), "")
            print(f"first dvc repro in {self.project}: {time.perf_counter() - self.started:.1f} s")
        if self.result.returncode != 0:
            pytest.fail(f"dvc repro exited {self.result.returncode}:\n{self.result.stdout[-6000:]}")
        return self.result


def stages_run(proc: subprocess.CompletedProcess[str]) -> set[str]:
    """The stages DVC ran, from its "Running stage '...'" lines."""
    return set(RUNNING.findall(proc.stdout + proc.stderr))


def make_project(root: Path, params: dict[str, Any]) -> Path:
    """A copy of the repository's tracked files with ``params``, as a fresh git + DVC project."""
    return projects.make_project(REPO_ROOT, root / "project", params, stage_env())


def check_outputs(project: Path, regimes: list[str],
                  runs_of: dict[tuple[str, str, str], int] | None = None, served: bool = True) -> None:
    """Metrics JSON per trained (domain, candidate, regime), the comparison report, and FINISHED MLflow runs:
    one per trained run unless ``runs_of`` says otherwise; with ``served``, the logged models and the
    registry (:func:`check_served`)."""
    trained = trained_runs(project, DOMAINS, regimes)
    for domain, candidate, regime in trained:
        path = project / "metrics" / domain / candidate / f"{regime}.json"
        assert path.is_file(), f"missing {path}"
        metrics = json.loads(path.read_text())
        assert METRIC_KEYS <= set(metrics), f"{path} lacks {METRIC_KEYS - set(metrics)}"
        assert (metrics["domain"], metrics["candidate"], metrics["regime"]) == (domain, candidate, regime)
        for key in ("accuracy", "macro_f1", "auroc"):
            assert 0.0 <= metrics["test"][key] <= 1.0, f"{path}: test.{key} = {metrics['test'].get(key)}"
        if regime in ("partial", "lora", "bitfit", "dora"):
            assert 0 < metrics["trainable_params"] < metrics["total_params"]
        elif regime in ("scratch", "full", "lp_ft", "l2sp"):
            assert 0 < metrics["trainable_params"] == metrics["total_params"]
    for ext in ("json", "md", "png"):
        assert (project / "reports" / f"comparison.{ext}").stat().st_size > 0
    rows = json.loads((project / "reports" / "comparison.json").read_text())
    assert [(r["domain"], r["candidate"], r["regime"]) for r in rows] == trained

    from mlflow import MlflowClient

    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiments = [client.get_experiment_by_name(d) for d in DOMAINS]
    assert all(experiments), "one MLflow experiment per domain"
    runs = client.search_runs([e.experiment_id for e in experiments if e is not None], max_results=1000)
    parents = {r.data.tags.get("domain"): r.info.run_id for r in runs if r.data.tags.get("run_kind") == "pipeline"}
    assert len(parents) == sum(r.data.tags.get("run_kind") == "pipeline" for r in runs) == len(DOMAINS), \
        "compare keeps one parent run per domain"
    seen: dict[tuple[str, str, str], int] = {}
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get("run_kind") == "pipeline":
            assert r.info.status == "FINISHED"
            continue
        assert tags.get("mlflow.parentRunId") == parents[tags.get("domain")]
        key = (tags.get("domain", ""), tags.get("backbone", ""), tags.get("regime", ""))
        seen[key] = seen.get(key, 0) + 1
        assert r.info.status == "FINISHED", f"{key}: {r.info.status} {tags.get('error', '')}"
        for tag in ("backbone", "dataset", "dvc_stage"):
            assert tags.get(tag), f"{key}: tag {tag} missing"
        assert tags.get("git_commit") == head
        for name in ("test_accuracy", "test_macro_f1", "test_auroc"):
            assert name in metrics, f"{key}: metric {name} missing ({sorted(metrics)})"
        # what the MLflow UI's runs table shows without configuring columns: the name and the datasets
        assert re.fullmatch(rf"{re.escape('-'.join(key))} \| .+ \| \w+ [01]\.\d{{3}} \| \d+ s", r.info.run_name), \
            r.info.run_name
        splits = {i.dataset.name: i.tags[0].value for i in client.get_run(r.info.run_id).inputs.dataset_inputs}
        assert splits == {f"{key[0]}-{s}": s for s in ("train", "validation", "test")}, splits
    assert seen == {run: 1 for run in trained} | (runs_of or {})
    assert all(e.tags.get("mlflow.experimentKind") == "custom_model_development" for e in experiments if e)
    if served:
        check_served(project, client, rows)


def check_screening(project: Path, regimes: list[str]) -> None:
    """The two-candidate project: every score of each candidate (LEEP/NCE only where a source head exists),
    vision trained both, nlp only the screening's pick (the other's stages say why), and the report sets
    the predictions beside what training measured."""
    vision = json.loads((project / "reports" / "screening" / "vision.json").read_text())
    nlp = json.loads((project / "reports" / "screening" / "nlp.json").read_text())
    pretrained, random = SCREENED["vision"]
    assert set(vision["scores"][pretrained]) == {"logme", "h_score", "shrinkage_h_score", "knn_accuracy", "probe",
                                                 "leep", "nce"}
    assert set(vision["scores"][random]) == set(vision["scores"][pretrained]) - {"leep", "nce"}
    assert vision["finalists"] == SCREENED["vision"] and len(nlp["finalists"]) == 1
    assert all(v["epoch_seconds"] > 0 for v in vision["fine_tuning_epoch"].values())
    (passed,) = set(SCREENED["nlp"]) - set(nlp["finalists"])
    assert nlp["finalists"] == [nlp["estimators"]["logme"]["ranking"][0]]  # select_by: logme
    for regime in regimes:
        note = json.loads((project / "models" / "nlp" / passed / regime / "left_out.json").read_text())
        assert "is not a finalist of screen@nlp" in note["left_out"], note
        assert "test" not in json.loads((project / "metrics" / "nlp" / passed / f"{regime}.json").read_text())
    record = json.loads((project / "reports" / "predicted_vs_measured.json").read_text())
    (domain,) = record["domains"]
    assert domain["domain"] == "vision" and list(domain["views"]) == [*regimes, "best regime"]
    assert set(domain["views"]["best regime"]) == {"logme", "h_score", "shrinkage_h_score", "knn_accuracy", "probe"}
    assert set(domain["what_screening_saves"]) == set(domain["views"]["best regime"])
    assert record["top1_hits"]["logme"]["domains"] == 1
    report = (project / "reports" / "comparison.md").read_text()
    assert "## Screening vision: predicted vs measured" in report and f"nlp/{passed}" in report
    assert "Screening vision: predicted vs measured" in (project / "reports" / "index.html").read_text()


# How closely a served package reproduces the evaluated test probabilities: to float32 rounding in fp32; in
# bf16 autocast (the card's precision where `auto` measured bf16 faster) batches of another size and a merged
# adapter round differently, by about one bf16 step (2**-8) of a logit
SERVED_ATOL = {"fp32": 1e-5, "bf16": 2e-2}


def check_served(project: Path, client: Any, rows: list[dict[str, Any]]) -> None:
    """Every (domain, regime)'s logged MLflow model, loaded from the project's store, gives the evaluate
    stage's test probabilities for the raw test inputs (:data:`SERVED_ATOL`); each domain's winner is registered
    ``transferlab-<domain>@champion`` and its cheapest front regime ``@cheapest``."""
    import mlflow
    import numpy as np
    import pandas as pd
    from datasets import load_from_disk

    from shared.evaluation.predictions import Predictions
    from shared.regimes.base import PACKAGE
    from shared.serving.package import ModelCard, probability_columns, raw_inputs
    from shared.serving.registration import CHAMPION, CHEAPEST, cheapest_row, registered_name

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    for domain in DOMAINS:
        items = raw_inputs(load_from_disk(str(project / "data" / "prepared" / domain / "test")))
        members = [row for row in rows if row["domain"] == domain]
        for row in members:
            folder = project / "models" / domain / row["candidate"] / row["regime"]
            card = ModelCard.read(folder / PACKAGE)
            uri = json.loads((project / "metrics" / domain / row["candidate"] / f"{row['regime']}.json"
                              ).read_text())["model_uri"]
            out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({card.input_column: items}))
            expected = Predictions.load(folder / "predictions.safetensors").test_probs
            np.testing.assert_allclose(out[probability_columns(card.class_names)].to_numpy(), expected,
                                       atol=SERVED_ATOL[card.precision], err_msg=f"{domain}/{row['regime']}: {uri}")
        chosen = {CHAMPION: next(row for row in members if row.get("winner")), CHEAPEST: cheapest_row(members)}
        for alias, row in chosen.items():
            assert row is not None, f"{domain}: no {alias} row"
            version = client.get_model_version_by_alias(registered_name(domain), alias)
            assert version.tags["regime"] == row["regime"], f"{registered_name(domain)}@{alias}: {version.tags}"


def expected_stages(candidates: dict[str, str], regimes: list[str]) -> set[str]:
    """Every stage dvc.yaml expands for ``candidates`` (``<domain>/<backbone>: <domain>``) x ``regimes``."""
    domains = set(candidates.values())
    expected = {f"{s}@{d}" for s in ("fetch", "prepare", "screen") for d in domains}
    expected |= {f"extract@{c}" for c in candidates}
    expected |= {f"{s}@{c}-{r}" for s in ("train", "evaluate") for c in candidates for r in regimes}
    return expected | {"compare", "check"}


def project_candidates(project: Path) -> dict[str, str]:
    """The ``candidates`` of a project's params.yaml."""
    return dict(yaml.safe_load((project / "params.yaml").read_text())["candidates"])


def default_candidates(domains: list[str] | tuple[str, ...], params: dict[str, Any] | None = None) -> dict[str, str]:
    """One candidate per domain: its section's backbone (own data: the modality's default)."""
    from domains.own import DEFAULT_MODEL
    from shared.registry import domain_class, section_format

    out = {}
    for d in domains:
        section = (params or {}).get(d) or {}
        backbone = (section.get("model") or {}).get("backbone") or \
            DEFAULT_MODEL[domain_class(d, section_format(section)).modality]["backbone"]
        out[f"{d}/{backbone}"] = d
    return out


def repro_timeout(stages: int) -> float:
    """Every stage is a fresh Python process: ~20 s each (imports, MLflow) on the shared 2-core machine, so
    the limit grows with the stage count (ten regimes: 48 stages, ~16 min; a flat 900 s cut it off)."""
    return 300 + 60 * stages


def start_main(tmp_path: Path, regimes: list[str], screened: bool = False) -> Repro:
    """The vision + nlp project with ``regimes`` (``screened``: two candidate backbones per domain), its first
    ``dvc repro`` started."""
    params = tiny_params(regimes, screened=screened)
    project = make_project(tmp_path, params)
    return Repro(project, repro_timeout(len(expected_stages(params["candidates"], regimes))))


def e2e(tmp_path: Path, regimes: list[str], started: Repro | None = None) -> None:
    started = started or start_main(tmp_path, regimes)
    project = started.project
    first = started.wait()
    candidates = yaml.safe_load((project / "params.yaml").read_text())["candidates"]
    assert stages_run(first) == expected_stages(candidates, regimes)
    check_outputs(project, regimes)
    screened = len(candidates) > len(DOMAINS)
    if screened:
        check_screening(project, regimes)

    t0 = time.perf_counter()
    again = run(["dvc", "repro"], project)
    seconds = time.perf_counter() - t0
    assert stages_run(again) == {"check"}, f"a no-op repro re-ran {stages_run(again)}"
    # only `check` runs: one Python process that validates every section, so it loads every plugin (torch,
    # datasets; PEFT only for adapter settings beyond the declared ones): 17 s measured alone on the
    # 2-core Intel machine (2026-12-01, PEFT still imported then), 24 s for the whole no-op repro under a
    # niced CI. Any real re-run takes minutes; making `check` cheaper (lazy plugin loading) is open.
    assert seconds < 40, f"a no-op dvc repro took {seconds:.1f} s"

    good = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text("definitely_not_a_key: 1\n" + good)
    typo = subprocess.run(["dvc", "repro"], cwd=project, env=stage_env(), capture_output=True, text=True,
                          timeout=300)
    assert typo.returncode != 0 and "unknown key(s) ['definitely_not_a_key']" in typo.stdout + typo.stderr
    assert stages_run(typo) == {"check"}
    (project / "params.yaml").write_text(good)

    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["vision"]["regimes"]["frozen"]["C_grid"] != [0.5]
    params["vision"]["regimes"]["frozen"]["C_grid"] = [0.5]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the per-candidate stages track the files `check` writes from params.yaml: after it ran, `dvc status`
    # names exactly the stages the edit touches (the screening reads the frozen probe's C grid too)
    run(["dvc", "repro", "check"], project)
    frozen = [c for d, c, r in trained_runs(project, DOMAINS, regimes) if d == "vision" and r == "frozen"]
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], project).stdout or "{}")
    assert set(status) == {"check", "screen@vision", *(f"train@vision/{c}-frozen" for c in frozen)}, status
    assert "always changed" in status["check"], status
    changed = run(["dvc", "repro"], project)
    assert stages_run(changed) == {"check", "screen@vision", "compare",
                                   *(f"{s}@vision/{c}-frozen" for s in ("train", "evaluate") for c in frozen)}
    for candidate in frozen:
        record = project / "models" / "vision" / candidate / "frozen" / "run.json"
        assert json.loads(record.read_text())["probe_C"] == 0.5
    check_outputs(project, regimes, runs_of={("vision", c, "frozen"): 2 for c in frozen}, served=False)

    # code is a dependency too: editing the baseline regime's module makes every train stage stale (they
    # depend on the whole shared/regimes package), train@*-baseline among them, and nothing upstream
    with (project / "shared" / "regimes" / "baseline.py").open("a") as f:
        f.write("# an edit\n")
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], project).stdout or "{}")
    candidates = yaml.safe_load((project / "params.yaml").read_text())["candidates"]
    trains = {f"train@{c}-{r}" for c in candidates for r in regimes}
    assert trains <= set(status), f"stale after editing shared/regimes/baseline.py: {sorted(status)}"
    assert not {s for s in status if s.split("@")[0] in ("fetch", "prepare", "extract")}, status


def start_default_projects(base: Path) -> dict[str, Repro]:
    """The default suite's two projects in ``base``, their first ``dvc repro`` started side by side:
    vision + nlp with :data:`DEFAULT_REGIMES`, and an image folder and a table (:data:`DEFAULT_OWN_DATA`)
    with ``frozen``. ``tests/conftest.py`` calls it when collection ends, so the two run while the rest of
    the suite does (stage processes that mostly import; the suite's other tests mostly use one core)."""
    main = start_main(base / "main", DEFAULT_REGIMES, screened=True)
    own_dir, sources = own_project(base / "own", DEFAULT_OWN_DATA, ["frozen"])
    own = Repro(own_dir, repro_timeout(len(expected_stages(project_candidates(own_dir), ["frozen"]))), sources)
    return {"main": main, "own": own}


STARTED: dict[str, Repro] = {}  # filled by tests/conftest.py's pytest_collection_finish


def stop(started: dict[str, Repro]) -> None:
    """Kill what is still running (a session that ends early)."""
    for repro in started.values():
        if repro.proc.poll() is None:
            repro.proc.kill()
            repro.proc.wait()


@pytest.fixture(scope="module")
def default_projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Repro]]:
    """The two projects of :func:`start_default_projects` (started early by the conftest, or here), both
    first runs finished before either test goes on, so the timed no-op repro runs alone."""
    started = STARTED or start_default_projects(tmp_path_factory.mktemp("e2e"))
    try:
        yield all_finished(started)
    finally:
        stop(started)


def all_finished(started: dict[str, Repro]) -> dict[str, Repro]:
    """``started`` once every run has ended (or run out of time: the test's ``wait()`` then fails)."""
    for repro in started.values():
        try:
            repro.proc.wait(timeout=max(1.0, repro.timeout - (time.perf_counter() - repro.started)))
        except subprocess.TimeoutExpired:
            pass  # the test's wait() kills it and fails with the log
    return started


@pytest.fixture(scope="module")
def slow_projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Repro]]:
    """The slow variants' two projects, side by side like :func:`default_projects`: vision + nlp with every
    registered regime, and every own-data layout and format with frozen and lora."""
    started = {"main": start_main(tmp_path_factory.mktemp("e2e-all"), ALL_REGIMES)}
    own_dir, sources = own_project(tmp_path_factory.mktemp("e2e-own-all"), list(OWN_DATA), ["frozen", "lora"],
                                   narrowed={"notes_parquet": ["frozen"]})
    stages = expected_stages(project_candidates(own_dir), ["frozen", "lora"])
    started["own"] = Repro(own_dir, repro_timeout(len(stages)), sources)
    try:
        yield all_finished(started)
    finally:
        stop(started)


def test_dvc_repro_end_to_end(default_projects: dict[str, Repro], tmp_path: Path) -> None:
    """frozen and lora on vision (MNIST) and NLP (Rotten Tomatoes)."""
    e2e(tmp_path, DEFAULT_REGIMES, default_projects["main"])


@pytest.mark.slow
def test_dvc_repro_end_to_end_all_regimes(slow_projects: dict[str, Repro], tmp_path: Path) -> None:
    """Every registered regime."""
    e2e(tmp_path, ALL_REGIMES, slow_projects["main"])


def kill_params() -> dict[str, Any]:
    """vision/full only, deterministic, three epochs of 30 steps (seconds each): room to kill mid-epoch."""
    params = tiny_params(["full"])
    params["domains"] = ["vision"]
    params["candidates"] = default_candidates(["vision"], params)
    del params["nlp"]
    params["vision"]["data"].update(max_train_samples=480)
    params["vision"]["model"].update(image_size=64)
    params["vision"]["train"].update(epochs=3, max_steps_per_epoch=None, batch_size=16, deterministic=True,
                                     patience=3)
    return params


LITE0 = "tf_efficientnet_lite0"


def _checkpoints(project: Path) -> list[Path]:
    return sorted((project / "checkpoints" / "vision" / LITE0 / "full").glob("*/ckpt-*.json"))


@pytest.mark.slow
def test_killed_train_stage_resumes_bit_exact(tmp_path: Path) -> None:
    """RELIABILITY (resume): kill ``dvc repro``'s process group (SIGKILL: no handler runs) in the middle of
    the second epoch of train@vision/tf_efficientnet_lite0-full; the next ``dvc repro`` resumes from the epoch-1
    checkpoint, ends with the same weights as an uninterrupted run, bit for bit, and the killed MLflow run is KILLED."""
    from mlflow import MlflowClient
    from safetensors.torch import load_file

    reference = make_project(tmp_path / "reference", kill_params())
    run(["dvc", "repro"], reference)
    reference_metrics = json.loads((reference / "metrics" / "vision" / LITE0 / "full.json").read_text())
    epoch_seconds = reference_metrics["train_seconds"] / 3
    assert epoch_seconds > 0.6, f"an epoch takes {epoch_seconds:.2f} s: too short to kill inside it"

    project = make_project(tmp_path / "killed", kill_params())
    proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=stage_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not _checkpoints(project):
            assert proc.poll() is None, f"dvc repro ended ({proc.returncode}) before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
        time.sleep(epoch_seconds / 3)  # inside epoch 2
        assert [p.name for p in _checkpoints(project)] == ["ckpt-00000000.json"], "killed too late"
        os.killpg(proc.pid, 9)
    finally:
        proc.wait(timeout=60)
    assert not (project / "models" / "vision" / LITE0 / "full" / "weights.safetensors").exists()

    again = run(["dvc", "repro"], project)
    assert "resumed from epoch 0 checkpoint" in again.stdout + again.stderr
    assert not _checkpoints(project), "checkpoints are removed once the weights are written"
    ours = load_file(project / "models" / "vision" / LITE0 / "full" / "weights.safetensors")
    theirs = load_file(reference / "models" / "vision" / LITE0 / "full" / "weights.safetensors")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not (ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
                                         and ours[k].view(-1).view(torch.uint8).equal(
                                             theirs[k].view(-1).view(torch.uint8)))]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    ours_m = json.loads((project / "metrics" / "vision" / LITE0 / "full.json").read_text())
    theirs_m = json.loads((reference / "metrics" / "vision" / LITE0 / "full.json").read_text())
    assert ours_m["test"] == theirs_m["test"]

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vision")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.regime = 'full'", max_results=100)
    statuses = sorted(r.info.status for r in runs if r.data.tags.get("run_kind") != "pipeline")
    assert statuses == ["FINISHED", "KILLED"], statuses


# --- your own data: a params section alone ------------------------------------------------------------

OWN_DATA = {  # name -> (what make_* writes, the section's data)
    "skin": ("flat", {"format": "imagefolder", "group_column": "patient", "validation_fraction": 0.25}),
    "xr": ("splits", {"format": "imagefolder", "group_pattern": r"^(p\d+)_", "validation_fraction": 0.25}),
    "notes": ("csv", {"format": "csv", "text_column": "note", "label_column": "specialty",
                      "group_column": "patient_id"}),
    "notes_jsonl": ("jsonl", {"format": "jsonl", "text_column": "note", "label_column": "specialty"}),
    "notes_parquet": ("parquet", {"format": "parquet", "text_column": "note", "label_column": "specialty"}),
}


# The default suite's own-data project: a flat image folder and a CSV table, each with a patient key. Every
# layout and format is read by tests/domains/test_own.py; the slow variant runs all of them end to end.
DEFAULT_OWN_DATA = ["skin", "notes"]
PATIENTS, TABLE_ROWS = 24, 90  # what the generated image folders and tables hold


def distinct_groups(name: str) -> int | None:
    """How many groups (patients) section ``name``'s generated data holds; None without a group key."""
    from shared.testing.own_data import table_rows

    kind, data = OWN_DATA[name]
    if not {"group_column", "group_pattern"} & set(data):
        return None
    return PATIENTS if kind in ("flat", "splits") else len(set(table_rows(TABLE_ROWS)["patient_id"]))


def own_project(tmp_path: Path, names: list[str], regimes: list[str],
                narrowed: dict[str, list[str]] | None = None) -> tuple[Path, dict[str, Path]]:
    """A project whose domains are generated image folders and tables, outside it, by section only;
    ``narrowed`` gives some sections their own list of regimes (``regimes: [frozen]``)."""
    from shared.testing.own_data import make_image_folder, make_table

    sources: dict[str, Path] = {}
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: raw[k] for k in ("seed", "sweep")}
    raw.update(domains=names, regimes=regimes)
    for name in names:
        kind, data = OWN_DATA[name]
        if kind in ("flat", "splits"):
            sources[name] = make_image_folder(tmp_path / "user" / name, layout=kind, patients=PATIENTS)  # type: ignore[arg-type]
            model = {"image_size": 32, "extract_batch_size": 64}
        else:
            sources[name] = make_table(tmp_path / "user" / f"{name}.{kind}", kind, n=TABLE_ROWS)  # type: ignore[arg-type]
            model = {"max_length": 32, "extract_batch_size": 64}
        # no `regimes` keys: the check stage fills in what DVC tracks (the user wrote data, sizes, schedule)
        raw[name] = {"data": {**data, "path": str(sources[name])}, "model": model,
                     "train": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8},
                     "evaluate": {"bootstrap": 20}}
        if name in (narrowed or {}):
            raw[name]["regimes"] = (narrowed or {})[name]
    raw["sweep"]["domains"] = names[:1]
    raw["candidates"] = default_candidates(names, raw)
    parse_params(raw)
    return make_project(tmp_path, raw), sources


def e2e_own(tmp_path: Path, names: list[str], regimes: list[str], started: Repro | None = None) -> None:
    if started is None:
        project, sources = own_project(tmp_path, names, regimes)
        started = Repro(project, repro_timeout(len(expected_stages(project_candidates(project), regimes))), sources)
    project, sources = started.project, started.sources
    first = started.wait()
    assert stages_run(first) == expected_stages(project_candidates(project), regimes)
    assert all(f"filled in the defaults of {n}: " in first.stdout + first.stderr for n in names)
    params = parse_params(yaml.safe_load((project / "params.yaml").read_text()))
    left_out = {(n, r) for n in names for r in regimes if r not in params.regimes_of(n)}
    for name in names:
        audit = json.loads((project / "reports" / "audit" / f"{name}.json").read_text())
        assert sum(audit["sizes"].values()) > 0
        if (groups := distinct_groups(name)) is not None:  # group-disjoint: each patient in one split only
            assert set(audit["groups"]) == {"train", "validation", "test"}, audit.get("groups")
            assert all(n > 0 for n in audit["groups"].values()), audit["groups"]
            assert sum(audit["groups"].values()) == groups, f"{name}: {audit['groups']} for {groups} patients"
        for regime in regimes:
            (candidate,) = params.candidates_of(name)
            metrics = json.loads((project / "metrics" / name / candidate / f"{regime}.json").read_text())
            if (name, regime) in left_out:  # its stages ran (DVC's matrix) and wrote why nothing trained
                assert metrics["left_out"] and "test" not in metrics, metrics
                continue
            assert metrics["domain"] == name and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    rows = json.loads((project / "reports" / "comparison.json").read_text())
    assert {(r["domain"], r["regime"]) for r in rows} == {(n, r) for n in names for r in regimes} - left_out
    if left_out:  # the report says which pairs did not run; the store holds no run of them
        from mlflow import MlflowClient

        report = (project / "reports" / "comparison.md").read_text()
        assert all(f"{n}/{r}" in report for n, r in left_out), report[:2000]
        client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
        for n, r in left_out:
            experiment = client.get_experiment_by_name(n)
            assert experiment is not None
            assert not client.search_runs([experiment.experiment_id], f"tags.regime = '{r}'"), (n, r)

    again = run(["dvc", "repro"], project)
    assert stages_run(again) == {"check"}, f"a no-op repro re-ran {stages_run(again)}"

    # the user's files are a dependency: editing one image (or one table) makes its fetch stale, only its
    edited = names[0]
    source = sources[edited]
    if source.is_dir():  # one image replaced by another one's bytes
        image, other = sorted(source.rglob("*.png"))[:2]
        image.write_bytes(other.read_bytes())
    else:  # one row appended
        source.write_bytes(source.read_bytes() + source.read_bytes().splitlines(keepends=True)[-1])
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], project).stdout or "{}")
    assert f"fetch@{edited}" in status, status
    assert not {s for s in status if s.startswith(("fetch@", "prepare@")) and not s.endswith(f"@{edited}")}, status


def test_own_data_end_to_end(default_projects: dict[str, Repro], tmp_path: Path) -> None:
    """Own data as domains, a params section each, no plugin: a flat image folder (metadata.csv patient
    column) and a CSV table (patient column); the frozen probe end to end; editing one image makes
    fetch@skin stale (the slow variant: every layout and format)."""
    e2e_own(tmp_path, DEFAULT_OWN_DATA, ["frozen"], default_projects["own"])


@pytest.mark.slow
def test_own_data_every_layout_and_format_end_to_end(slow_projects: dict[str, Repro], tmp_path: Path) -> None:
    """Flat and split image folders, CSV, JSONL and Parquet, with frozen and lora; the Parquet section
    narrows the regimes to its own list (``regimes: [frozen]``): its lora stages write why nothing ran."""
    e2e_own(tmp_path, list(OWN_DATA), ["frozen", "lora"], slow_projects["own"])
