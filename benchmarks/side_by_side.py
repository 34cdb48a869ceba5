"""Two runs of the same pipeline side by side: ``python -m benchmarks.side_by_side BEFORE AFTER --label L``.

BEFORE and AFTER are project checkouts (say the commit before a change and the change) in which
``dvc repro -f`` ran one after the other on one machine, with ``--seconds`` their wall times. Writes
``benchmarks/results/side-by-side-<label>.json``: per (domain, regime) the test primary metric with its 95%
CI, the training seconds and the precision of each run, whether the AFTER metric lies inside the BEFORE
run's CI, the winner of each domain in each, and the extraction throughput of each candidate (from the
stages' logs, ``repro.log`` beside each checkout's ``dvc.yaml``) and, where both checkouts hold a ``stages.json``
(each stage's wall seconds, which ``--run`` writes), every stage's wall in each run and the stages that were
slower after. With ``--sweep DOMAIN`` the two runs were
``dvc repro sweep/dvc.yaml`` and the record compares their ``reports/sweep/<DOMAIN>.json`` instead: per
(regime, fraction) the mean test metric over the seeds with the BEFORE run's seed range, the training
seconds per regime, and the crossover points.

``python -m benchmarks.side_by_side --run --domains D [D ...] --label L`` makes the two runs itself: two
fresh projects of the tracked files (under ``--workdir``, default a new temporary folder, kept for
inspection) with the repository's params for ``D``, the first with every precision forced to ``fp32``
(``model.extract_precision``, ``train.precision``, ``train.eval_precision``: the path ``auto`` leaves bit
for bit as it was before precision existed), the second as configured (``auto``) with an empty precision
cache; ``dvc repro -f`` in one, then in the other, each logged to its ``repro.log`` with its stages' walls in
``stages.json`` (from the moment DVC prints ``Running stage`` to the next stage's, or to the end); then the
comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO_ROOT, machine_info, mirror_dir, write_result

EXTRACT = re.compile(r"extract (\S+?)/(train|validation|test): \((\d+), \d+\) at ([\d.]+) items/s")
STAGE_START = re.compile(rb"^Running stage '([^']+)':")


def _rows(project: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads((project / "reports" / "comparison.json").read_text())
    return {f"{r['domain']}/{r['regime']}": r for r in rows}


def stage_walls(starts: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Each stage's wall seconds from the stages' start times, in order (DVC runs one stage at a time): until the
    next stage starts, the last one until ``end``."""
    if not starts:
        return {}
    ends = [t for _, t in starts[1:]] + [end]
    return {stage: stop - start for (stage, start), stop in zip(starts, ends, strict=True)}


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, dict[str, float]]:
    """Run ``cmd``, its output into ``log`` as it comes; its exit status and each stage's wall seconds
    (:func:`stage_walls` of the ``Running stage`` lines' arrival times)."""
    starts: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with log.open("wb") as out, subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # split at b"\n" only: progress bars' b"\r" stay as they are
            out.write(line)
            if match := STAGE_START.match(line):
                starts.append((match.group(1).decode(), time.perf_counter() - t0))
    return proc.returncode, stage_walls(starts, time.perf_counter() - t0)


def compare_stages(before: Path, after: Path) -> dict[str, Any]:
    """Every stage's wall in both runs (``stages.json`` of each checkout; ``null`` where a run has no wall for
    it) and the stages that took longer after; empty when either checkout has no ``stages.json``."""
    files = [p / "stages.json" for p in (before, after)]
    if not all(f.is_file() for f in files):
        return {}
    old, new = (json.loads(f.read_text()) for f in files)
    rows = [{"stage": stage, "before": old.get(stage), "after": new.get(stage),
             "speedup": old[stage] / new[stage] if old.get(stage) and new.get(stage) else None}
            for stage in [*old, *(s for s in new if s not in old)]]
    return {"stage_seconds": rows,
            "slower_stages": [r["stage"] for r in rows if r["speedup"] is not None and r["speedup"] < 1]}


def compare(before: Path, after: Path) -> dict[str, Any]:
    """The side-by-side record of two projects' reports and logs."""
    old, new = _rows(before), _rows(after)
    out: dict[str, Any] = {"rows": []}
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        out["rows"].append({
            "row": key, "primary_metric": a["primary_metric"],
            "before": {k: a.get(k) for k in ("primary", "primary_ci_low", "primary_ci_high", "train_seconds",
                                             "precision", "winner")},
            "after": {k: b.get(k) for k in ("primary", "primary_ci_low", "primary_ci_high", "train_seconds",
                                            "precision", "winner")},
            "after_inside_before_ci": a["primary_ci_low"] <= b["primary"] <= a["primary_ci_high"],
            "train_speedup": a["train_seconds"] / b["train_seconds"] if b.get("train_seconds") else None,
        })
    for side, project in (("before", before), ("after", after)):
        log = project / "repro.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        out[f"extract_items_per_second_{side}"] = {f"{d}/{s}": float(rate) for d, s, _, rate in EXTRACT.findall(text)}
    out["same_winners"] = ({r["row"].split("/")[0]: r["row"] for r in out["rows"] if r["before"]["winner"]} ==
                           {r["row"].split("/")[0]: r["row"] for r in out["rows"] if r["after"]["winner"]})
    out.update(compare_stages(before, after))
    return out


def compare_sweeps(before: Path, after: Path, domain: str) -> dict[str, Any]:
    """The side-by-side record of two sweeps of ``domain`` (see the module docstring)."""
    old, new = (json.loads((p / "reports" / "sweep" / f"{domain}.json").read_text()) for p in (before, after))
    out: dict[str, Any] = {"primary_metric": old["primary_metric"], "curves": [], "train_seconds": {}}
    for regime in sorted(old["curves"].keys() & new["curves"].keys()):
        for a, b in zip(old["curves"][regime], new["curves"][regime], strict=True):
            out["curves"].append({"regime": regime, "fraction": a["fraction"], "n_train": a["n_train"],
                                  "before_mean": a["mean"], "before_min": a["min"], "before_max": a["max"],
                                  "after_mean": b["mean"], "after_minus_before": b["mean"] - a["mean"],
                                  "after_inside_before_range": a["min"] <= b["mean"] <= a["max"]})
        seconds = [sum(pt["train_seconds"] for pt in run["points"] if pt["regime"] == regime) for run in (old, new)]
        out["train_seconds"][regime] = {"before": seconds[0], "after": seconds[1],
                                        "speedup": seconds[0] / seconds[1] if seconds[1] else None}
    out["crossover"] = {"before": old["crossover"], "after": new["crossover"],
                        "same": old["crossover"] == new["crossover"]}
    return out


def forced_fp32(params: dict[str, Any], domains: list[str]) -> dict[str, Any]:
    """``params`` with every precision of ``domains`` forced to fp32 (extraction, training, scoring)."""
    out = yaml.safe_load(yaml.safe_dump(params))
    for domain in domains:
        out[domain].setdefault("model", {})["extract_precision"] = "fp32"
        out[domain].setdefault("train", {}).update(precision="fp32", eval_precision="fp32")
    return out


def run_pair(domains: list[str], workdir: Path) -> tuple[Path, Path, dict[str, float]]:
    """The fp32 and the ``auto`` project of ``domains`` under ``workdir``, each ``dvc repro -f`` one after
    the other; their folders and wall seconds."""
    from benchmarks.pipeline import with_domains
    from benchmarks.repro import _env
    from shared.testing import projects

    params = with_domains(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), domains)
    env = {**_env(), "TRANSFERLAB_MIRROR": str(mirror_dir().resolve())}
    seconds: dict[str, float] = {}
    folders = {}
    for side, side_params in (("before", forced_fp32(params, domains)), ("after", params)):
        project = projects.make_project(REPO_ROOT, workdir / side, side_params, env)
        side_env = {**env, "TRANSFERLAB_CACHE": str(workdir / f"{side}-cache")}  # empty: auto measures
        t0 = time.perf_counter()
        returncode, walls = run_logged(["dvc", "repro", "-f"], project, side_env, project / "repro.log")
        seconds[side] = time.perf_counter() - t0
        if returncode != 0:
            raise RuntimeError(f"dvc repro -f in {project} exited {returncode}; see its repro.log")
        (project / "stages.json").write_text(json.dumps(walls, indent=1))
        print(f"{side}: {seconds[side]:.1f} s", flush=True)
        folders[side] = project
    return folders["before"], folders["after"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="?")
    parser.add_argument("after", type=Path, nargs="?")
    parser.add_argument("--label", required=True)
    parser.add_argument("--seconds", type=float, nargs=2, metavar=("BEFORE", "AFTER"),
                        help="wall seconds of each dvc repro -f (not with --run)")
    parser.add_argument("--note", default="", help="what ran (commits, params)")
    parser.add_argument("--sweep", metavar="DOMAIN", help="compare the two runs' sweeps of DOMAIN instead")
    parser.add_argument("--run", action="store_true", help="make both runs: fp32 forced, then auto")
    parser.add_argument("--domains", nargs="+", help="with --run: the domains of both projects")
    parser.add_argument("--workdir", type=Path, help="with --run: where the projects go (default: a temporary folder)")
    args = parser.parse_args()
    if args.run:
        if not args.domains or args.sweep:
            parser.error("--run needs --domains (and compares pipelines, not sweeps)")
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="transferlab-side-by-side-"))
        print(f"projects in {workdir}", flush=True)
        before, after, seconds = run_pair(args.domains, workdir.resolve())
        note = args.note or f"--run --domains {' '.join(args.domains)}: fp32 forced, then auto (empty cache)"
    else:
        if args.before is None or args.after is None or args.seconds is None:
            parser.error("give BEFORE, AFTER and --seconds, or --run")
        before, after, note = args.before, args.after, args.note
        seconds = {"before": args.seconds[0], "after": args.seconds[1]}
    record = compare_sweeps(before, after, args.sweep) if args.sweep else compare(before, after)
    result = {"machine": machine_info(), "note": note, "repro_seconds": seconds, **record}
    write_result(f"side-by-side-{args.label}", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
