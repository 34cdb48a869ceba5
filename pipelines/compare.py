"""Stage ``compare``: every domain x trained candidate backbone x regime in one report.

Writes ``reports/comparison.json`` (one row per (domain, candidate, regime): primary metric with its 95% CI,
cost, rank, Pareto flags and a paired bootstrap against the domain's winner), ``reports/comparison.md``,
``reports/comparison.png`` and ``reports/index.html`` with its figures in ``reports/figures/``; where a
domain screened several candidates, the screening's predicted rankings beside the measured ones
(``reports/screening.json`` and a section of the report; :mod:`shared.screening.agreement`).

Inputs are ``metrics/<d>/<c>/<r>.json`` and ``models/<d>/<c>/<r>/predictions.safetensors`` (the paired tests
need the test probabilities) of every finalist ``c`` of ``screen@<d>``, or, with ``--tracking-uri``, the same
files read back from the MLflow runs (the metrics JSON artifact ``<r>.json`` and
``predictions/predictions.safetensors``) so a report can be rebuilt from a tracking server alone.

Built from local files, the stage also groups the MLflow runs: one parent run per domain experiment
(tag ``run_kind=pipeline``, the git revision and the DVC experiment name; reused when both match) with
every (domain, candidate, regime) run of ``models/<d>/<c>/<r>/run.json`` as its child (``mlflow.parentRunId``), and
registers each domain's winner as ``transferlab-<domain>@champion`` and its cheapest regime on the
time/quality front as ``@cheapest`` (:mod:`shared.serving.registration`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.common import git_commit, is_finalist, reconcile_tracking, run_main, staged_output
from shared import paths
from shared.config import DomainParams, ProjectParams, load_params
from shared.evaluation.predictions import Predictions
from shared.files.atomic import atomic_path, write_json
from shared.reporting import (
    bar_chart,
    build_rows,
    finite_rows,
    html_report,
    load_anchors,
    markdown_report,
    markdown_table,
    report_figures,
    summarize,
)
from shared.screening.agreement import domain_agreement, hit_table, report_sections
from shared.serving.registration import register_winners, registered_name

PARENT_KIND = "pipeline"  # tag run_kind of the per-domain parent runs
Inputs = list[tuple[dict[str, Any], Predictions | None]]


# --- inputs -------------------------------------------------------------------------------------


def trained(params: ProjectParams, finalists: bool = True) -> list[tuple[str, str, str]]:
    """(domain, candidate, regime) of every run the report shows, in report order: each domain's candidates
    that ``screen@<domain>`` picked (all candidates with ``finalists=False``, or where the screening's files
    are absent, as when a report is rebuilt from a tracking server), crossed with its regimes."""
    return [(d, c, r) for d in params.domains for c in params.candidates_of(d)
            if not finalists or not paths.finalist_file(d, c).is_file() or is_finalist(d, c)
            for r in params.regimes_of(d)]


def inputs_from_files(params: ProjectParams) -> Inputs:
    """Metrics JSON + predictions of every trained (domain, candidate, regime), from the working tree."""
    runs = trained(params)
    missing = [str(paths.metrics_file(*run)) for run in runs if not paths.metrics_file(*run).is_file()]
    if missing:
        raise SystemExit(f"compare: metrics missing for {missing}; run the evaluate stages first")
    out: Inputs = []
    for domain, candidate, regime in runs:
        metrics = json.loads(paths.metrics_file(domain, candidate, regime).read_text())
        pred_file = paths.model_dir(domain, candidate, regime) / "predictions.safetensors"
        if not pred_file.is_file():
            print(f"compare: {pred_file} missing; {domain}/{candidate}/{regime} gets no paired test",
                  file=sys.stderr)
        out.append((metrics, Predictions.load(pred_file) if pred_file.is_file() else None))
    return out


def _finished_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'FINISHED'", max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _download(client: Any, run_id: str, candidates: tuple[str, ...], dst: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    for artifact in candidates:
        try:
            return Path(client.download_artifacts(run_id, artifact, dst_path=str(dst)))
        except (MlflowException, OSError):
            continue
    return None


def inputs_from_tracking(uri: str, params: ProjectParams, dst: Path) -> Inputs:
    """The same inputs read from a tracking server: per trained (domain, candidate, regime) the newest
    FINISHED run of the domain's experiment (tags ``backbone`` and ``regime``; parent runs excluded) that
    holds the metrics JSON artifact."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(uri)
    out: Inputs = []
    missing = []
    found_runs: dict[str, list[Any]] = {}
    for domain, candidate, regime in trained(params):
        if domain not in found_runs:
            exp = client.get_experiment_by_name(domain)
            found_runs[domain] = [] if exp is None else _finished_runs(client, exp.experiment_id)
        runs = found_runs[domain]
        if not any(run.data.tags.get("backbone") == candidate for run in runs):
            print(f"compare: no run of {domain}/{candidate} on {uri}: not trained there, not in the report",
                  file=sys.stderr)
            continue
        found = None
        for run in runs:
            tags = run.data.tags
            if (tags.get("regime") != regime or tags.get("backbone") != candidate
                    or tags.get("run_kind") == PARENT_KIND):
                continue
            folder = dst / run.info.run_id
            path = _download(client, run.info.run_id, (f"{regime}.json", f"metrics/{regime}.json"), folder)
            if path is not None:
                found = (run.info.run_id, json.loads(path.read_text()), folder)
                break
        if found is None:
            missing.append(f"{domain}/{candidate}/{regime}")
            continue
        run_id, metrics, folder = found
        pred = _download(client, run_id, ("predictions/predictions.safetensors",), folder)
        if pred is None:
            print(f"compare: run {run_id} ({domain}/{candidate}/{regime}) has no predictions artifact; "
                  "no paired test", file=sys.stderr)
        out.append((metrics, Predictions.load(pred) if pred is not None else None))
    if missing:
        raise SystemExit(f"compare: no FINISHED run with a metrics artifact on {uri} for {missing}")
    return out


# --- outputs ------------------------------------------------------------------------------------


def our_setting(dp: DomainParams) -> str:
    """Our run's setting in words (for the anchors table): input size, training data, schedule."""
    bits = []
    size = getattr(dp.data, "size", None)
    if size:
        bits.append(f"{size} px source images")
    if dp.model.image_size:
        bits.append(f"{dp.model.image_size} px input")
    if dp.model.max_length:
        bits.append(f"max {dp.model.max_length} tokens")
    cap = dp.data.max_train_samples
    bits.append(f"at most {cap} training items" if cap else "full training set")
    if dp.data.max_eval_samples:
        bits.append(f"validation and test cut to {dp.data.max_eval_samples} items")
    bits.append(f"{dp.train.epochs} epoch(s) for trained regimes, best-validation epoch kept")
    return ", ".join(bits)


def screening_records(rows: list[dict[str, Any]], params: ProjectParams) -> list[dict[str, Any]]:
    """The predicted-vs-measured record of every domain whose screening scored candidates and that trained
    at least two of them (:func:`shared.screening.agreement.domain_agreement`)."""
    records = []
    for domain in params.domains:
        file = paths.screening_file(domain)
        if not file.is_file():
            continue
        record = domain_agreement(json.loads(file.read_text()), [r for r in rows if r["domain"] == domain])
        if record is not None:
            records.append(record)
    return records


def write_report(rows: list[dict[str, Any]], params: ProjectParams, out: Path, source: str) -> None:
    """``comparison.{json,md,png}``, ``predicted_vs_measured.json`` (the screening against training),
    ``index.html`` and ``figures/`` in ``out`` (each replaced whole)."""
    rows = finite_rows(rows)
    anchors = load_anchors()
    settings = {d: our_setting(params.domain(d)) for d in params.domains}
    records = screening_records(rows, params)
    sections = report_sections(records)
    write_json(out / "comparison.json", rows)
    write_json(out / "predicted_vs_measured.json", {"domains": records, "top1_hits": hit_table(records)})
    with staged_output(out / "figures") as folder:
        figures = report_figures(rows, folder)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(markdown_report(rows, anchors, settings, source, sections))
    with atomic_path(out / "comparison.png") as tmp:
        bar_chart(rows, tmp)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(html_report(rows, figures, anchors=anchors, settings=settings, source=source,
                                   sections=sections))


# --- MLflow parent runs -------------------------------------------------------------------------


def _find_parent(client: Any, experiment: str, commit: str, exp_name: str) -> str | None:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.run_kind = '{PARENT_KIND}'", max_results=1000,
                              order_by=["attributes.start_time DESC"])
    for run in runs:
        tags = run.data.tags
        if tags.get("git_commit") == commit and tags.get("dvc_experiment", "") == exp_name:
            return run.info.run_id
    return None


def domain_note(domain: str, rows: list[dict[str, Any]]) -> str:
    """The MLflow description of a domain's experiment and parent run: its comparison table, the winner
    and where the full report is."""
    winner = next(r for r in rows if r["winner"])
    ci = ("" if winner.get("primary_ci_low") is None
          else f" (95% CI {winner['primary_ci_low']:.3f}-{winner['primary_ci_high']:.3f})")
    return (f"## {domain}: transferlab comparison\n\nWinner: **{winner['label']}** ({winner['backbone']}), test "
            f"{winner['primary_metric']} {winner['primary']:.3f}{ci}; registered as "
            f"`models:/{registered_name(domain)}@champion`.\n\n{markdown_table(rows)}\n\n"
            "The full report (CIs, paired tests, figures) is the parent run's artifact `report/index.html` "
            "and `reports/index.html` in the project.\n")


def link_parent_runs(params: ProjectParams, rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    """One parent run per domain experiment; each (domain, regime) run of ``run.json`` becomes its child.

    The parent is tagged with the git revision and ``DVC_EXP_NAME`` (set by ``dvc exp run``) and reused
    when a parent with both already exists. It carries the domain's winner (tag and metric) and the report
    files as artifacts. Returns {domain: parent run id}.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from shared.tracking import open_client, tracked_run

    client = open_client()
    commit, exp_name = git_commit(), os.environ.get("DVC_EXP_NAME", "")
    summary = summarize(rows)
    parents = {}
    for domain in params.domains:
        dp = params.domain(domain)
        children = {}
        for _, candidate, regime in [run for run in trained(params) if run[0] == domain]:
            record = paths.model_dir(domain, candidate, regime) / "run.json"
            if record.is_file():
                children[f"{candidate}/{regime}"] = json.loads(record.read_text())["run_id"]
        backbones = list(dict.fromkeys(key.rpartition("/")[0] for key in children))
        tags = {"run_kind": PARENT_KIND, "domain": domain, "dataset": dp.data.dataset, "backbone": ",".join(backbones),
                "git_commit": commit, "dvc_experiment": exp_name, "dvc_stage": "compare",
                "winner": summary[domain]["winner"],
                "regimes": ",".join(dict.fromkeys(key.rpartition("/")[2] for key in children))}
        existing = _find_parent(client, domain, commit, exp_name)
        name = f"{domain}-pipeline" + (f"-{exp_name}" if exp_name else "")
        with tracked_run(domain, name, tags=tags, run_id=existing) as parent:
            parent_id = parent.info.run_id
            note = domain_note(domain, [r for r in rows if r["domain"] == domain])
            mlflow.set_tag("mlflow.note.content", note)  # the parent run's page opens on its comparison
            client.set_experiment_tag(parent.info.experiment_id, "mlflow.note.content", note)
            for key, run_id in children.items():
                try:
                    client.set_tag(run_id, "mlflow.parentRunId", parent_id)
                except MlflowException as err:
                    print(f"compare: cannot attach run {run_id} ({domain}/{key}) to {parent_id}: {err}",
                          file=sys.stderr)
            winner = next(r for r in rows if r["domain"] == domain and r["winner"])
            mlflow.log_metric(f"winner_test_{winner['primary_metric']}", float(winner["primary"]))
            for fname in ("comparison.json", "comparison.md", "index.html"):
                mlflow.log_artifact(str(out / fname), artifact_path="report")
            for png in sorted((out / "figures").glob(f"{domain}_*.png")):
                mlflow.log_artifact(str(png), artifact_path="report/figures")
        parents[domain] = parent_id
    return parents


# --- entry point --------------------------------------------------------------------------------


def bootstrap_counts(params: ProjectParams) -> Mapping[str, int]:
    """Resamples of the paired tests per domain: the domain's ``evaluate.bootstrap``."""
    return {d: params.domain(d).evaluate.bootstrap for d in params.domains}


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    parser.add_argument("--tracking-uri", default=None,
                        help="rebuild the report from this MLflow tracking server instead of local files")
    parser.add_argument("--out", default=None, help="output folder (default: reports/ at the root)")
    args = parser.parse_args(argv)
    params = load_params(args.params or paths.params_file())
    reconcile_tracking()
    out = Path(args.out) if args.out else paths.reports_dir()
    if args.tracking_uri:
        with tempfile.TemporaryDirectory(prefix="transferlab-compare-") as tmp:
            inputs = inputs_from_tracking(args.tracking_uri, params, Path(tmp))
        source = f"Rebuilt from the MLflow tracking server {args.tracking_uri}."
    else:
        inputs = inputs_from_files(params)
        source = "Built from the working tree (metrics/, models/)."
    unrun = [f"{d}/{r}" for d in params.domains for r in params.regimes if r not in params.regimes_of(d)]
    if unrun:  # in the report, not silently missing
        source += f" Not run, left out by their domain's section (regimes.<regime>: false): {', '.join(unrun)}."
    if not args.tracking_uri:
        passed = sorted({f"{d}/{c}" for d, c, _ in trained(params, finalists=False)}
                        - {f"{d}/{c}" for d, c, _ in trained(params)})
        if passed:
            source += f" Not trained, not finalists of the screening (reports/screening/): {', '.join(passed)}."
    rows = finite_rows(build_rows(inputs, bootstrap=bootstrap_counts(params), seed=params.seed))
    write_report(rows, params, out, source)
    if not args.tracking_uri and params.tracking.parent_run:
        link_parent_runs(params, rows, out)
    if not args.tracking_uri:
        registered = register_winners(rows, {"git_commit": git_commit(),
                                             "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")})
        for domain, aliases in registered.items():
            print("compare: registered " + ", ".join(f"{registered_name(domain)}@{a} = version {v}"
                                                      for a, v in aliases.items()))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    run_main(main)
