"""(g) Backbone screening against training: every candidate scored, then every candidate trained.

A real ``dvc repro`` in a temporary copy of the tracked files (``git ls-files``) with the repository's
``params.yaml`` except: ``domains`` (default xray, dermatology, ehr), ``regimes`` (default frozen, lora,
full), ``candidates`` (EfficientNet-Lite0/1/2 and randomly initialised Lite0 for the image domains;
all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2 and randomly initialised MiniLM-L6 for the text ones: every
offline candidate there is) and ``screen.finalists: all``, so the report sets each estimator's ranking
beside the measured one (``reports/predicted_vs_measured.json``). Writes ``results/screening.json`` (the
settings, the wall time, the per-candidate scores and seconds, and the agreement records) and copies
``comparison.md`` and the screening reports into ``results/screening/``. Data come from
``TRANSFERLAB_MIRROR`` (default ``../shared/data``). This takes as long as the training does (about an
hour on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO_ROOT, RESULTS_DIR, cpu_model, mirror_dir, portable_path, write_result
from benchmarks.repro import RUNNING, make_project, run_checked

IMAGE_CANDIDATES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                    "tf_efficientnet_lite0+random"]
TEXT_CANDIDATES = ["sentence-transformers/all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2",
                   "sentence-transformers/all-MiniLM-L6-v2+random"]
DOMAINS = ["xray", "dermatology", "ehr"]
REGIMES = ["frozen", "lora", "full"]


def study_params(domains: list[str], regimes: list[str]) -> dict[str, Any]:
    """The repository's params with the study's domains, regimes, candidates and ``finalists: all``."""
    from shared.registry import get_domain

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    candidates: dict[str, str] = {}
    for domain in domains:
        names = TEXT_CANDIDATES if get_domain(domain).modality == "text" else IMAGE_CANDIDATES
        candidates |= {f"{domain}/{name}": domain for name in names}
        params[domain]["screen"] = {"finalists": "all", "select_by": "logme"}
    return {**params, "domains": domains, "regimes": regimes, "candidates": candidates}


def run(domains: list[str] | None = None, regimes: list[str] | None = None) -> dict[str, Any]:
    """Run the study; returns (and writes) ``results/screening.json``."""
    domains, regimes = list(domains or DOMAINS), list(regimes or REGIMES)
    params = study_params(domains, regimes)
    os.environ.setdefault("TRANSFERLAB_MIRROR", str(mirror_dir().resolve()))
    tmp = Path(tempfile.mkdtemp(prefix="transferlab-screening-"))  # kept when a stage fails, to resume
    project = make_project(tmp, params)
    print(f"screening study: dvc repro in {project}", flush=True)
    t0 = time.perf_counter()
    output = run_checked(["dvc", "repro"], project, timeout=6 * 3600)
    seconds = time.perf_counter() - t0
    (RESULTS_DIR / "screening").mkdir(parents=True, exist_ok=True)
    shutil.copy2(project / "reports" / "comparison.md", RESULTS_DIR / "screening" / "comparison.md")
    screening = {d: json.loads((project / "reports" / "screening" / f"{d}.json").read_text()) for d in domains}
    for domain, record in screening.items():
        (RESULTS_DIR / "screening" / f"{domain}.json").write_text(json.dumps(record, indent=2) + "\n")
    agreement = json.loads((project / "reports" / "predicted_vs_measured.json").read_text())
    rows = json.loads((project / "reports" / "comparison.json").read_text())
    shutil.rmtree(tmp)
    measured = [{k: r.get(k) for k in ("domain", "candidate", "regime", "primary_metric", "primary", "primary_ci_low",
                                       "primary_ci_high", "train_seconds", "precision")} for r in rows]
    result = {
        "settings": {"project": "temporary copy of the tracked files (git ls-files)",
                     "params": "the repository's params.yaml; domains, regimes, candidates and screen overridden",
                     "domains": domains, "regimes": regimes, "candidates": params["candidates"],
                     "finalists": "all", "cpu": cpu_model(), "mirror": portable_path(os.environ["TRANSFERLAB_MIRROR"])},
        "repro_seconds": seconds,
        "stages": len(RUNNING.findall(output)),
        "screening": screening,
        "measured": measured,
        "agreement": agreement,
    }
    write_result("screening", result)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=DOMAINS)
    parser.add_argument("--regimes", nargs="+", default=REGIMES)
    args = parser.parse_args()
    run(args.domains, args.regimes)
