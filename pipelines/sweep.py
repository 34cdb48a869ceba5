"""Data-efficiency sweep (opt-in, not part of ``dvc repro``): how many labels does each regime need?

    python -m pipelines.sweep --domain xray [--fractions 0.01 0.1 1.0] [--regimes frozen lora full scratch]
                              [--seeds 0 1 2] [--min-steps 50] [--params sweep-params.yaml] [--out reports/sweep]

For every label fraction (of the prepared train split, stratified: each class keeps that share, at least
``sweep.min_per_class`` items; for one seed the subsets are nested, so a larger fraction adds labels) x
regime x seed, the regime runs through the library's :func:`shared.training.run.run_regime` on that subset
of train (the frozen probe takes those rows of the *existing feature cache*, so run ``extract`` first)
and scored on the untouched validation and test splits with the domain's primary metric. Every point
trains with the domain's own schedule (epochs, batch size); ``sweep.min_steps`` repeats a small subset
within each epoch so that every trained point takes at least that many optimizer steps.

Writes ``<out>/<domain>.json`` (every point, mean / min / max over seeds per fraction, and the crossover:
the number of labelled examples from which a fine-tuning regime's mean stays above the frozen probe's,
interpolated in log-space between the bracketing fractions) and ``<out>/<domain>.png`` (metric vs number
of labelled examples, one line per regime, min-max band over seeds). The JSON is rewritten after every
point; a re-run with the same settings skips the points it already holds (``--no-resume`` starts over).
Each point is an MLflow run (experiment ``<domain>-sweep``) nested under one parent run per sweep.
Defaults come from the ``sweep`` section of the params file (:class:`shared.config.SweepParams`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict, load_from_disk

from pipelines.common import Stage, git_commit, parse_stage, run_main
from shared import paths
from shared.config import ParamsError, SweepParams
from shared.evaluation.metrics import METRICS
from shared.files.atomic import atomic_path, write_json
from shared.regimes.base import RegimeContext
from shared.tracking import init_store, log_metrics, tracked_run
from shared.training.run import run_regime

PROBE = "frozen"


def stratified_indices(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 2) -> np.ndarray:
    """Sorted train indices: ``round(fraction * n_c)`` (at least ``min_per_class``, at most ``n_c``) items of
    every class c, drawn by a seeded per-class permutation (so, for one seed, subsets are nested)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(members), max(min_per_class, int(round(fraction * len(members)))))
        chosen.append(members[:k])
    return np.sort(np.concatenate(chosen))


def epoch_rows(idx: np.ndarray, batch_size: int, epochs: int, min_steps: int) -> np.ndarray:
    """The labelled subset as each epoch sees it: ``idx`` repeated whole until an epoch holds at least
    ``ceil(min_steps / epochs)`` batches (so ``epochs`` epochs take at least ``min_steps`` optimizer steps,
    with the domain's per-epoch validation unchanged); ``idx`` itself when it is already large enough."""
    rows_needed = math.ceil(min_steps / epochs) * batch_size
    return np.tile(idx, max(1, math.ceil(rows_needed / len(idx))))


def settings_digest(stage: Stage, cfg: SweepParams) -> str:
    """What a point's result depends on besides (regime, fraction, seed): reused points must match it."""
    dp = stage.dp
    key = {"data": dp.data.model_dump(mode="json"), "model": dp.model.model_dump(mode="json"),
           "train": dp.train.model_dump(mode="json"), "regimes": dp.model_dump(mode="json")["regimes"],
           "min_per_class": cfg.min_per_class, "min_steps": cfg.min_steps}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_point(stage: Stage, dd: DatasetDict, regime: str, fraction: float, seed: int,
              cfg: SweepParams) -> dict[str, Any]:
    """Train and score one (regime, fraction, seed) inside its own (nested) MLflow run."""
    point = Stage(params=stage.params.model_copy(update={"seed": seed}), domain=stage.domain, regime=regime)
    plugin = point.regime_plugin
    train_labels = np.asarray(dd["train"]["label"], dtype=np.int64)
    idx = stratified_indices(train_labels, fraction, seed, cfg.min_per_class)
    rows = idx  # what one epoch sees
    name, pm = stage.domain.name, stage.domain.primary_metric
    tags = {**point.tags("sweep"), "sweep": "true", "fraction": str(fraction), "seed": str(seed),
            "n_train": str(len(idx))}
    with tracked_run(f"{name}-sweep", f"{name}-{regime}-f{fraction:g}-s{seed}", tags=tags, nested=True,
                     params={"regime": regime, "fraction": fraction, "seed": seed, "n_train": len(idx)}) as run:
        ckpt = None
        if plugin.trains_network:
            train = plugin.train_params(point.dp)
            rows = epoch_rows(idx, train.batch_size, train.epochs, cfg.min_steps)
            # resumable checkpoints of a point live apart from the train stage's (and from other points')
            ckpt = (paths.checkpoint_dir(name, f"sweep-{regime}") / f"f{fraction:g}-s{seed}"
                    / settings_digest(stage, cfg))
        ctx = RegimeContext(domain=stage.domain, seed=seed, data=dd, features_dir=paths.features_dir(name),
                            train_indices=rows, checkpoints=ckpt)
        with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
            preds, info = run_regime(plugin, ctx, Path(tmp))
        test = float(METRICS[pm](preds.test_labels, preds.test_probs))
        val = float(METRICS[pm](preds.val_labels, preds.val_probs))
        result = {"regime": regime, "fraction": fraction, "seed": seed, "n_train": int(len(idx)),
                  "epoch_rows": int(len(rows)),
                  f"test_{pm}": test, f"val_{pm}": val, "train_seconds": float(info.get("train_seconds") or 0.0),
                  "trainable_params": info.get("trainable_params"), "run_id": run.info.run_id}
        log_metrics({f"test_{pm}": test, f"val_{pm}": val, "n_train": len(idx),
                     "train_seconds": result["train_seconds"]})
    return result


def curves(points: list[dict[str, Any]], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Per regime and fraction: the number of labelled examples and mean / min / max over seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for regime in dict.fromkeys(p["regime"] for p in points):
        rows = []
        for fraction in sorted({p["fraction"] for p in points if p["regime"] == regime}):
            values = [p[metric] for p in points if p["regime"] == regime and p["fraction"] == fraction]
            n = [p["n_train"] for p in points if p["regime"] == regime and p["fraction"] == fraction]
            rows.append({"fraction": fraction, "n_train": int(round(float(np.mean(n)))), "mean": float(np.mean(values)),
                         "min": float(np.min(values)), "max": float(np.max(values)), "seeds": len(values)})
        out[regime] = rows
    return out


def crossovers(curve: dict[str, list[dict[str, Any]]], probe: str = PROBE) -> dict[str, dict[str, Any]]:
    """For every other regime: from how many labelled examples its mean stays above the probe's.

    ``status``: ``crosses`` (below at small fractions, above from ``first_n_above`` on; ``n_train`` is the
    log-linear interpolation of the zero crossing of the mean difference), ``always_above`` (above at every
    fraction), ``never`` (not above at the largest fraction, or not for good).
    """
    if probe not in curve:
        return {}
    base = {c["fraction"]: c["mean"] for c in curve[probe]}
    out: dict[str, dict[str, Any]] = {}
    for regime, rows in curve.items():
        if regime == probe:
            continue
        pts = sorted((c["n_train"], c["mean"] - base[c["fraction"]], c["fraction"]) for c in rows
                     if c["fraction"] in base)
        k = len(pts)
        while k > 0 and pts[k - 1][1] > 0:
            k -= 1
        if k == len(pts):
            out[regime] = {"status": "never", "n_train": None, "fraction": None, "first_n_above": None}
        elif k == 0:
            out[regime] = {"status": "always_above", "n_train": pts[0][0], "fraction": pts[0][2],
                           "first_n_above": pts[0][0]}
        else:
            (n0, d0, _), (n1, d1, f1) = pts[k - 1], pts[k]
            t = (0.0 - d0) / (d1 - d0)
            n_star = math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))) if n0 > 0 else float(n1)
            out[regime] = {"status": "crosses", "n_train": round(n_star, 1), "fraction": f1, "first_n_above": n1}
    return out


def plot(report: dict[str, Any], path: Path) -> Path:
    """Metric vs number of labelled examples: mean line and min-max band over seeds per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for regime, rows in report["curves"].items():
        n = [r["n_train"] for r in rows]
        line, = ax.plot(n, [r["mean"] for r in rows], marker="o", label=regime)
        ax.fill_between(n, [r["min"] for r in rows], [r["max"] for r in rows], color=line.get_color(), alpha=0.15)
        cross = report["crossover"].get(regime, {})
        if cross.get("status") == "crosses":
            ax.axvline(cross["n_train"], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples (log)")
    ax.set_ylabel(f"test {report['primary_metric']}")
    ax.set_title(f"{report['domain']} ({report['dataset']}): data efficiency, "
                 f"{len(report['seeds'])} seed(s), band = min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def resolve_settings(base: SweepParams, args: argparse.Namespace) -> SweepParams:
    """The params file's ``sweep`` section with the command-line overrides, validated again."""
    update = {k: v for k, v in (("fractions", args.fractions), ("regimes", args.regimes), ("seeds", args.seeds),
                                ("min_steps", args.min_steps)) if v is not None}
    try:
        return SweepParams.model_validate({**base.model_dump(), **update})
    except ValueError as err:
        raise ParamsError(f"sweep settings: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the sweep."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=None)
    parser.add_argument("--regimes", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--min-steps", type=int, default=None, help="override sweep.min_steps")
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/sweep at the root)")
    parser.add_argument("--no-resume", action="store_true", help="recompute points already in the JSON")
    args = parser.parse_args(argv)
    stage = parse_stage(["--domain", args.domain] + (["--params", args.params] if args.params else []),
                        __doc__ or "")
    cfg = resolve_settings(stage.params.sweep, args)
    name, pm = stage.domain.name, stage.domain.primary_metric
    out_dir = Path(args.out) if args.out else paths.reports_dir() / "sweep"
    json_path = out_dir / f"{name}.json"
    dd = load_from_disk(str(paths.prepared_dir(name)))
    digest = settings_digest(stage, cfg)
    done: dict[tuple[str, float, int], dict[str, Any]] = {}
    if json_path.is_file() and not args.no_resume:
        previous = json.loads(json_path.read_text())
        if previous.get("settings_digest") == digest:
            done = {(p["regime"], p["fraction"], p["seed"]): p for p in previous["points"]}
    report: dict[str, Any] = {
        "domain": name, "dataset": stage.dp.data.dataset, "backbone": stage.dp.model.backbone,
        "primary_metric": pm, "n_train_total": len(dd["train"]), "fractions": sorted(cfg.fractions),
        "regimes": cfg.regimes, "seeds": cfg.seeds, "min_per_class": cfg.min_per_class, "min_steps": cfg.min_steps,
        "settings_digest": digest, "status": "running", "points": [],
    }
    init_store([f"{name}-sweep"])
    tags = {"domain": name, "dataset": stage.dp.data.dataset, "backbone": stage.dp.model.backbone, "sweep": "true",
            "git_commit": git_commit(), "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
            "run_kind": "sweep"}
    with tracked_run(f"{name}-sweep", f"{name}-sweep", tags=tags, params=cfg.model_dump()):
        for fraction in sorted(cfg.fractions):
            for regime in cfg.regimes:
                for seed in cfg.seeds:
                    point = done.get((regime, fraction, seed))
                    if point is None:
                        point = run_point(stage, dd, regime, fraction, seed, cfg)
                        print(f"sweep {name}: {regime} fraction={fraction:g} seed={seed} n={point['n_train']} "
                              f"test {pm}={point[f'test_{pm}']:.4f}")
                    report["points"].append(point)
                    write_json(json_path, report)  # a killed sweep resumes from here
        report["curves"] = curves(report["points"], f"test_{pm}")
        report["crossover"] = crossovers(report["curves"])
        report["status"] = "complete"
        write_json(json_path, report)
        plot(report, out_dir / f"{name}.png")
    for regime, cross in report["crossover"].items():
        print(f"sweep {name}: {regime} vs {PROBE}: {cross['status']}"
              + (f" at ~{cross['n_train']} labelled examples" if cross["n_train"] is not None else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
