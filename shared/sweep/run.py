"""Train and score every (label fraction, regime, seed) point of a sweep, resumably.

For every label fraction (of the prepared train split, stratified: each class keeps that share, at least
``min_per_class`` items; for one seed the subsets are nested) x regime x seed, the regime runs through
:func:`shared.training.run.run_regime` on that subset of train (the frozen probe takes those rows of the
existing feature cache) and is scored on the untouched validation and test splits with the domain's
primary metric. Every point trains with the domain's own schedule; ``min_steps`` repeats a small subset
within each epoch so that every trained point takes at least that many optimizer steps.

The report JSON is rewritten after every point; a re-run with the same settings skips the points it holds.
Each point is an MLflow run (experiment ``<domain>-sweep``) nested under one parent run per sweep.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict, load_from_disk

from shared import paths
from shared.config import SweepParams
from shared.data.domain import Domain
from shared.evaluation.metrics import METRICS
from shared.files.atomic import write_json
from shared.regimes.base import RegimeContext
from shared.registry import get_regime
from shared.sweep.curves import crossovers, curves, plot
from shared.sweep.subsets import epoch_rows, stratified_indices
from shared.tracking import init_store, log_metrics, tracked_run
from shared.training.run import run_regime


def settings_digest(domain: Domain[Any], cfg: SweepParams) -> str:
    """What a point's result depends on besides (regime, fraction, seed): reused points must match it."""
    dp = domain.params
    key = {"data": dp.data.model_dump(mode="json"), "model": dp.model.model_dump(mode="json"),
           "train": dp.train.model_dump(mode="json"), "regimes": dp.model_dump(mode="json")["regimes"],
           "min_per_class": cfg.min_per_class, "min_steps": cfg.min_steps}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_point(domain: Domain[Any], dd: DatasetDict, regime: str, fraction: float, seed: int, cfg: SweepParams,
              tags: Mapping[str, str]) -> dict[str, Any]:
    """Train and score one (regime, fraction, seed) inside its own (nested) MLflow run."""
    plugin = get_regime(regime).for_domain(domain.params)
    idx = stratified_indices(np.asarray(dd["train"]["label"], dtype=np.int64), fraction, seed, cfg.min_per_class)
    rows = idx  # what one epoch sees
    name, pm, backbone = domain.name, domain.primary_metric, domain.params.model.name
    point_tags = {**tags, "regime": regime, "dvc_stage": f"sweep@{name}-{regime}", "sweep": "true",
                  "fraction": str(fraction), "seed": str(seed), "n_train": str(len(idx))}
    with tracked_run(f"{name}-sweep", f"{name}-{regime}-f{fraction:g}-s{seed}", tags=point_tags, nested=True,
                     params={"regime": regime, "fraction": fraction, "seed": seed, "n_train": len(idx)}) as run:
        ckpt = None
        if plugin.trains_network:
            train = plugin.train_params(domain.params)
            rows = epoch_rows(idx, train.batch_size, train.epochs, cfg.min_steps)
            # resumable checkpoints of a point live apart from the train stage's (and from other points')
            ckpt = (paths.checkpoint_dir(name, backbone, f"sweep-{regime}") / f"f{fraction:g}-s{seed}"
                    / settings_digest(domain, cfg))
        ctx = RegimeContext(domain=domain, seed=seed, data=dd, features_dir=paths.features_dir(name, backbone),
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


def run_sweep(domain: Domain[Any], cfg: SweepParams, out_dir: Path, *, tags: Mapping[str, str],
              resume: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every point of ``cfg`` on ``domain`` (prepared split and feature cache on disk), write
    ``<out_dir>/<domain>.json`` after every point and ``<domain>.png`` at the end; return the report.

    ``tags`` go on the parent MLflow run and every point's; ``resume`` keeps the points of a previous report
    with the same :func:`settings_digest`.
    """
    name, pm = domain.name, domain.primary_metric
    json_path = out_dir / f"{name}.json"
    dd = load_from_disk(str(paths.prepared_dir(name)))
    digest = settings_digest(domain, cfg)
    done: dict[tuple[str, float, int], dict[str, Any]] = {}
    if json_path.is_file() and resume:
        previous = json.loads(json_path.read_text())
        if previous.get("settings_digest") == digest:
            done = {(p["regime"], p["fraction"], p["seed"]): p for p in previous["points"]}
    dp = domain.params
    report: dict[str, Any] = {
        "domain": name, "dataset": dp.data.dataset, "backbone": dp.model.name,
        "primary_metric": pm, "n_train_total": len(dd["train"]), "fractions": sorted(cfg.fractions),
        "regimes": cfg.regimes, "seeds": cfg.seeds, "min_per_class": cfg.min_per_class, "min_steps": cfg.min_steps,
        "settings_digest": digest, "status": "running", "points": [],
    }
    init_store([f"{name}-sweep"])
    with tracked_run(f"{name}-sweep", f"{name}-sweep", tags={**tags, "sweep": "true", "run_kind": "sweep"},
                     params=cfg.model_dump()):
        for fraction in sorted(cfg.fractions):
            for regime in cfg.regimes:
                for seed in cfg.seeds:
                    point = done.get((regime, fraction, seed))
                    if point is None:
                        point = run_point(domain, dd, regime, fraction, seed, cfg, tags)
                        say(f"sweep {name}: {regime} fraction={fraction:g} seed={seed} n={point['n_train']} "
                            f"test {pm}={point[f'test_{pm}']:.4f}")
                    report["points"].append(point)
                    write_json(json_path, report)  # a killed sweep resumes from here
        report["curves"] = curves(report["points"], f"test_{pm}")
        report["crossover"] = crossovers(report["curves"])
        report["status"] = "complete"
        write_json(json_path, report)
        plot(report, out_dir / f"{name}.png")
    return report
