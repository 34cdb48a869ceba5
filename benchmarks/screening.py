"""(g) Backbone screening against training: every candidate scored, then every candidate trained.

A real ``dvc repro`` in a temporary copy of the tracked files (``git ls-files``) with the repository's
``params.yaml`` except: ``domains`` (default xray, dermatology, ehr), ``regimes`` (default frozen, lora,
full), ``candidates`` (EfficientNet-Lite0/1/2 and randomly initialised Lite0 for the image domains;
all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2 and randomly initialised MiniLM-L6 for the text ones: every
offline candidate there is) and ``screen.finalists: all``, so the report sets each estimator's ranking
beside the measured one (``reports/predicted_vs_measured.json``). Writes ``results/screening.json`` (the
settings, the wall time, the per-candidate scores and seconds, and the agreement records) and copies
``comparison.md`` and the screening reports into ``results/screening/``. Data come from
``TRANSFERLAB_MIRROR`` (default ``../shared/data``). This takes as long as the training does: 74 stages
with ``--epochs 1`` (the three default domains) took 2240 s on 2 CPU cores after a first attempt had
extracted the features (README, "Measured: does the screening pick the backbone training picks?").
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


def study_params(domains: list[str], regimes: list[str], max_steps_per_epoch: int | None = None,
                 epochs: int | None = None) -> dict[str, Any]:
    """The repository's params with the study's domains, regimes, candidates and ``finalists: all``
    (``max_steps_per_epoch`` and ``epochs``: each domain's ``train.max_steps_per_epoch`` and
    ``train.epochs``, to fit a time budget)."""
    from shared.registry import get_domain

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    candidates: dict[str, str] = {}
    for domain in domains:
        names = TEXT_CANDIDATES if get_domain(domain).modality == "text" else IMAGE_CANDIDATES
        candidates |= {f"{domain}/{name}": domain for name in names}
        params[domain]["screen"] = {"finalists": "all", "select_by": "logme"}
        if max_steps_per_epoch is not None:
            params[domain]["train"]["max_steps_per_epoch"] = max_steps_per_epoch
        if epochs is not None:
            params[domain]["train"]["epochs"] = epochs
    return {**params, "domains": domains, "regimes": regimes, "candidates": candidates}


def run(domains: list[str] | None = None, regimes: list[str] | None = None, max_steps_per_epoch: int | None = None,
        project: Path | None = None, name: str = "screening", epochs: int | None = None) -> dict[str, Any]:
    """Run the study (``project``: resume the one a stopped run left, with these params); returns (and
    writes) ``results/<name>.json`` (reports in ``results/<name>/``)."""
    domains, regimes = list(domains or DOMAINS), list(regimes or REGIMES)
    params = study_params(domains, regimes, max_steps_per_epoch, epochs)
    os.environ.setdefault("TRANSFERLAB_MIRROR", str(mirror_dir().resolve()))
    resumed = project is not None  # then repro_seconds is the resumed run's alone
    if project is None:
        tmp = Path(tempfile.mkdtemp(prefix="transferlab-screening-"))  # kept when a stage fails, to resume
        project = make_project(tmp, params)
    else:
        tmp = project.parent
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"screening study: dvc repro in {project}", flush=True)
    t0 = time.perf_counter()
    output = run_checked(["dvc", "repro"], project, timeout=6 * 3600)
    seconds = time.perf_counter() - t0
    (RESULTS_DIR / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(project / "reports" / "comparison.md", RESULTS_DIR / name / "comparison.md")
    screening = {d: json.loads((project / "reports" / "screening" / f"{d}.json").read_text()) for d in domains}
    for domain, record in screening.items():
        (RESULTS_DIR / name / f"{domain}.json").write_text(json.dumps(record, indent=2) + "\n")
    agreement = json.loads((project / "reports" / "predicted_vs_measured.json").read_text())
    rows = json.loads((project / "reports" / "comparison.json").read_text())
    shutil.rmtree(tmp)
    measured = [{k: r.get(k) for k in ("domain", "candidate", "regime", "primary_metric", "primary", "primary_ci_low",
                                       "primary_ci_high", "train_seconds", "epochs_run", "precision")} for r in rows]
    result = {
        "settings": {"project": "temporary copy of the tracked files (git ls-files)",
                     "params": "the repository's params.yaml; domains, regimes, candidates and screen overridden",
                     "domains": domains, "regimes": regimes, "candidates": params["candidates"],
                     "finalists": "all", "max_steps_per_epoch": max_steps_per_epoch, "cpu": cpu_model(),
                     "resumed": resumed,
                     "epochs": {d: params[d]["train"]["epochs"] for d in domains},
                     "mirror": portable_path(os.environ["TRANSFERLAB_MIRROR"])},
        "repro_seconds": seconds,
        "stages": len(RUNNING.findall(output)),
        "screening": screening,
        "measured": measured,
        "agreement": agreement,
    }
    write_result(name, result)
    return result


def _short(candidate: str) -> str:
    return candidate.rpartition("/")[2].replace("tf_efficientnet_", "").replace("all-MiniLM-", "MiniLM-")


def summary_markdown(result: dict[str, Any]) -> str:
    """The README's tables from ``results/screening.json``: per domain, every candidate's scores (with the
    seconds of all of them beside one measured fine-tuning epoch) and test metric per regime; then every
    estimator's Kendall tau and top-1 hit per view, misses in bold."""
    from shared.screening.agreement import domain_agreement, hit_table

    out = []
    epochs = result["settings"].get("epochs", {})
    # results written before rows carried epochs_run ran every epoch of the settings (no early stop at 2)
    measured = [{**m, "epochs_run": m.get("epochs_run") or epochs.get(m["domain"])} for m in result["measured"]]
    # recomputed from the stored scores and measured rows (as compare does), so the tables follow the code
    records = [r for d in result["settings"]["domains"] if (r := domain_agreement(
        result["screening"][d], [m for m in measured if m["domain"] == d])) is not None]
    for record in records:
        domain = record["domain"]
        screen = result["screening"][domain]
        regimes = list(dict.fromkeys(m["regime"] for m in measured if m["domain"] == domain))
        estimators = list(dict.fromkeys(e for c in record["candidates"] for e in screen["scores"][c]))
        metric = next(m["primary_metric"] for m in measured if m["domain"] == domain)
        header = ["candidate", *estimators, *(f"{r} test {metric}" for r in regimes)]
        out += [f"**{domain}** ({metric})", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for candidate in record["candidates"]:
            scores = screen["scores"][candidate]
            cells = [_short(candidate), *(f"{scores[e]['score']:.3f}" if e in scores else "n/a" for e in estimators)]
            for regime in regimes:
                row = next(m for m in measured
                           if (m["domain"], m["candidate"], m["regime"]) == (domain, candidate, regime))
                cells.append(f"{row['primary']:.3f} [{row['primary_ci_low']:.3f}, {row['primary_ci_high']:.3f}]")
            out.append("| " + " | ".join(cells) + " |")
        cost = record["cost"]
        each = ", ".join(f"{e} {v:.1f} s" for e, v in cost["seconds"].items())
        line = (f"All scores of all {len(record['candidates'])} candidates: {cost['all_seconds']:.1f} s ({each}); one "
                f"fine-tuning epoch of every candidate, estimated from timed steps: {cost['epoch_seconds']:.0f} s "
                f"({100 * cost['all_vs_epoch']:.1f}%)")
        if cost.get("measured_epoch_seconds"):
            line += (f"; measured (full regime's train seconds / epochs run, summed over candidates): "
                     f"{cost['measured_epoch_seconds']:.0f} s, so the scores took "
                     f"{100 * cost['all_vs_measured_epoch']:.1f}% of it")
        out += ["", line + ".", ""]
        views = list(record["views"])
        header = ["estimator", *(f"{v}: tau / top-1" for v in views)]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for estimator in record["views"][views[-1]]:
            cells = [estimator + (" (pretrained only)" if estimator in record.get("compared_on", {}) else "")]
            for view in views:
                r = record["views"][view][estimator]
                tau = "n/a" if r["kendall_tau"] is None else f"{r['kendall_tau']:+.2f}"
                cells.append(f"{tau} / " + ("hit" if r["top1_hit"] else "**miss**"))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    hits = hit_table(records)
    out += ["Top-1 hits across domains (best regime): "
            + ", ".join(f"{e} {h['top1_hits']}/{h['domains']}" for e, h in hits.items()) + "."]
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=DOMAINS)
    parser.add_argument("--regimes", nargs="+", default=REGIMES)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="every domain's train.epochs (default: params.yaml)")
    parser.add_argument("--project", type=Path, default=None, help="resume the project a stopped run left")
    parser.add_argument("--name", default="screening", help="results/<name>.json (default: screening)")
    parser.add_argument("--summary", action="store_true", help="print the README tables of results/<name>.json")
    args = parser.parse_args()
    if args.summary:
        print(summary_markdown(json.loads((RESULTS_DIR / f"{args.name}.json").read_text())))
    else:
        run(args.domains, args.regimes, args.max_steps_per_epoch, args.project, args.name, args.epochs)
