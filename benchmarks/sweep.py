"""The data-efficiency sweep as users run it: ``dvc repro sweep/dvc.yaml``, timed, in a temporary copy.

The copy holds the repository's tracked files and ``params.yaml`` with ``domains`` set to
``sweep.domains`` (the sweep reads their prepared splits and feature caches, which the top-level stages
make). The wall time covers everything the command runs: fetch, prepare and extract of those domains and
every (fraction, regime, seed) point. The per-domain JSON and PNG the sweep writes are copied to
``results/sweep/``; ``results/sweep.json`` holds the time, the curves and the crossover points.
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

from benchmarks.common import REPO_ROOT, RESULTS_DIR, mirror_dir, portable_path, write_result
from benchmarks.repro import RUNNING, make_project, run_checked


def run() -> dict[str, Any]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    domains = list(params["sweep"]["domains"])
    os.environ.setdefault("TRANSFERLAB_MIRROR", str(mirror_dir().resolve()))
    out_dir = RESULTS_DIR / "sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transferlab-sweep-") as tmp:
        project = make_project(Path(tmp), {**params, "domains": domains})
        t0 = time.perf_counter()
        output = run_checked(["dvc", "repro", "sweep/dvc.yaml"], project, timeout=4 * 3600)
        seconds = time.perf_counter() - t0
        reports = {}
        for domain in domains:
            for ext in ("json", "png"):
                shutil.copy2(project / "reports" / "sweep" / f"{domain}.{ext}", out_dir / f"{domain}.{ext}")
            report = json.loads((out_dir / f"{domain}.json").read_text())
            reports[domain] = {k: report[k] for k in ("dataset", "backbone", "primary_metric", "n_train_total",
                                                      "curves", "crossover")}
    result = {
        "settings": {"command": "dvc repro sweep/dvc.yaml", "domains": domains,
                     **{k: params["sweep"][k] for k in ("fractions", "regimes", "seeds")},
                     "mirror": portable_path(os.environ["TRANSFERLAB_MIRROR"])},
        "seconds": seconds, "stages": RUNNING.findall(output), "domains": reports,
    }
    write_result("sweep", result)
    return result
