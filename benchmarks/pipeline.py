"""(e) The default pipeline per domain, end to end: a real, timed ``dvc repro`` in a temporary copy.

The copy holds the repository's tracked files (``git ls-files``) and its ``params.yaml`` as is, except
``domains``: ``--domains`` picks them (default: the params' own list). Each domain runs as its own
``dvc repro`` (``domains: [D]``) so its wall time is measured alone; a last ``dvc repro`` with every domain
listed only re-runs ``compare`` and gives the cross-domain report. The result name is ``pipeline-<label>``;
the comparison report (``comparison.md``/``.json``) is copied beside it in ``results/pipeline-<label>/``.
Data come from ``TRANSFERLAB_MIRROR`` (default ``../shared/data``). This takes as long as the pipeline does.
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


def with_domains(params: dict[str, Any], domains: list[str]) -> dict[str, Any]:
    """``params`` running ``domains`` only: their entries of ``candidates`` (a domain without one: its
    section's backbone)."""
    candidates = {k: d for k, d in params["candidates"].items() if d in domains}
    for d in domains:
        if d not in candidates.values():
            candidates[f"{d}/{params[d]['model']['backbone']}"] = d
    return {**params, "domains": domains, "candidates": candidates}


def _primary_metrics(project: Path, domain: str) -> dict[str, dict[str, Any]]:
    """Per trained run: the primary test metric, its CI and the cost the evaluate stage wrote
    (``metrics/<domain>/<candidate>/<regime>.json``); keyed by regime, or ``<candidate>/<regime>`` when the
    domain has several candidates. Runs the screening left out are skipped (their file says why)."""
    out: dict[str, dict[str, Any]] = {}
    files = sorted((project / "metrics" / domain).rglob("*.json"))
    several = len({f.parent for f in files}) > 1
    for path in files:
        data = json.loads(path.read_text())
        if data.get("left_out"):
            continue
        name, test = data["primary_metric"], data["test"]
        key = path.relative_to(project / "metrics" / domain).with_suffix("").as_posix() if several else path.stem
        out[key] = {"primary_metric": name, "primary_value": test[name],
                          "ci": [test.get(f"{name}_ci_low"), test.get(f"{name}_ci_high")],
                          **{k: data.get(k) for k in ("trainable_params", "train_seconds", "peak_memory_mb")}}
    return out


def run(domains: list[str] | None = None, label: str = "default") -> dict[str, Any]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    domains = list(domains or params["domains"])
    os.environ.setdefault("TRANSFERLAB_MIRROR", str(mirror_dir().resolve()))
    per_domain: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="transferlab-pipeline-") as tmp:
        project = make_project(Path(tmp), with_domains(params, domains[:1]))
        for domain in domains:
            (project / "params.yaml").write_text(yaml.safe_dump(with_domains(params, [domain]), sort_keys=False))
            t0 = time.perf_counter()
            output = run_checked(["dvc", "repro"], project, timeout=4 * 3600)
            seconds = time.perf_counter() - t0
            per_domain[domain] = {"seconds": seconds, "stages": len(RUNNING.findall(output)),
                                  "metrics": _primary_metrics(project, domain)}
            print(f"pipeline {domain}: {seconds:.0f} s", flush=True)
        (project / "params.yaml").write_text(yaml.safe_dump(with_domains(params, domains), sort_keys=False))
        compare_s = time.perf_counter()
        run_checked(["dvc", "repro"], project, timeout=3600)
        compare_s = time.perf_counter() - compare_s
        report_dir = RESULTS_DIR / f"pipeline-{label}"
        report_dir.mkdir(parents=True, exist_ok=True)
        for name in ("comparison.md", "comparison.json"):
            shutil.copy2(project / "reports" / name, report_dir / name)
    result = {
        "settings": {"project": "temporary copy of the tracked files (git ls-files)",
                     "params": "the repository's params.yaml, domains overridden", "domains": domains,
                     "regimes": params["regimes"], "mirror": portable_path(os.environ["TRANSFERLAB_MIRROR"])},
        "domain_seconds": {d: r["seconds"] for d, r in per_domain.items()},
        "total_seconds": sum(r["seconds"] for r in per_domain.values()),
        "cross_domain_compare_seconds": compare_s,
        "domains": per_domain,
    }
    write_result(f"pipeline-{label}", result)
    return result
