"""Report rows: one JSON-ready row per (domain, candidate backbone, regime) from measured metrics and test
predictions, ranked within its domain by the primary test metric, with paired-bootstrap leads and cost/quality
Pareto fronts. A row's ``label`` names it in tables and figures: the regime, with the candidate when the domain
trained more than one."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.evaluation.metrics import bootstrap_ci, paired_bootstrap
from shared.evaluation.predictions import Predictions

COLUMNS = ("trainable_params", "train_seconds", "peak_memory_mb", "train_samples_per_second")


# --- rows ---------------------------------------------------------------------------------------


def collect(metrics_files: list[Path]) -> list[dict[str, Any]]:
    """One basic row per metrics file: identity, cost, and the test metrics (no significance)."""
    return [basic_row(json.loads(Path(path).read_text())) for path in metrics_files]


def basic_row(m: Mapping[str, Any]) -> dict[str, Any]:
    """Identity, primary metric (+ its CI when the metrics JSON has one), headline metrics and cost."""
    test, pm = m["test"], m["primary_metric"]
    return {
        "domain": m["domain"], "candidate": m.get("candidate") or m["backbone"], "regime": m["regime"],
        "label": m["regime"], "regime_description": m.get("regime_description"),
        "backbone": m["backbone"], "dataset": m["dataset"],
        "task": m.get("task"), "primary_metric": pm, "primary": test[pm],
        "primary_ci_low": test.get(f"{pm}_ci_low"), "primary_ci_high": test.get(f"{pm}_ci_high"),
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "auroc": test["auroc"],
        "total_params": m.get("total_params"), **{k: m.get(k) for k in COLUMNS}, "epochs_run": m.get("epochs_run"),
        "run_id": m.get("run_id"),
        "model_uri": m.get("model_uri"), "precision": precision_label(m),
    }


def precision_label(m: Mapping[str, Any]) -> str | None:
    """Which precision each phase of a run used (``train bf16, eval fp32``; a probe: ``extract bf16``), from
    its metrics JSON; None for a run with no network forward (the classical baseline)."""
    phases = (("extract", "extract_precision"), ("train", "precision"), ("eval", "eval_precision"))
    label = ", ".join(f"{name} {m[key]}" for name, key in phases if m.get(key))
    return label or None


def short_name(candidate: str) -> str:
    """A candidate backbone's name without its hub organisation (``sentence-transformers/all-MiniLM-L6-v2`` ->
    ``all-MiniLM-L6-v2``), for labels."""
    return candidate.rpartition("/")[2]


def _same_items(a: Predictions, b: Predictions) -> bool:
    return a.test_labels.shape == b.test_labels.shape and bool(np.array_equal(a.test_labels, b.test_labels))


def pareto_front(points: Sequence[tuple[float | None, float]]) -> list[bool]:
    """Which (cost, quality) points no other point dominates (cost <= and quality >=, one strictly).

    Points with an unknown cost (None) are never on the front.
    """
    out = []
    for i, (cost, quality) in enumerate(points):
        if cost is None:
            out.append(False)
            continue
        dominated = any(
            j != i and c is not None and c <= cost and q >= quality and (c < cost or q > quality)
            for j, (c, q) in enumerate(points)
        )
        out.append(not dominated)
    return out


def build_rows(inputs: Iterable[tuple[Mapping[str, Any], Predictions | None]], *,
               bootstrap: Mapping[str, int] | int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """The rows of ``comparison.json``: :func:`basic_row` plus rank, winner, Pareto flags and a paired
    bootstrap of the winner against every other regime of the domain.

    ``inputs`` are (metrics JSON, predictions or None) in report order (domains, then regimes);
    ``bootstrap`` is the number of resamples (per domain, or one for all; 0 skips the tests).
    A missing primary CI is computed from the predictions with the same resamples.
    """
    rows, preds = [], []
    for metrics, p in inputs:
        rows.append(basic_row(metrics))
        preds.append(p)
    for domain in dict.fromkeys(r["domain"] for r in rows):
        same = [r for r in rows if r["domain"] == domain]
        if len({r["candidate"] for r in same}) > 1:
            for r in same:
                r["label"] = f"{r['regime']} ({short_name(r['candidate'])})"
        n_boot = bootstrap if isinstance(bootstrap, int) else int(bootstrap.get(domain, 1000))
        members = [i for i, r in enumerate(rows) if r["domain"] == domain]
        _rank_domain([rows[i] for i in members], [preds[i] for i in members], n_boot, seed)
    return rows


def _rank_domain(rows: list[dict[str, Any]], preds: list[Predictions | None], n_boot: int, seed: int) -> None:
    metric = rows[0]["primary_metric"]
    for row, p in zip(rows, preds, strict=True):
        row["n_test"] = None if p is None else int(len(p.test_labels))
        if row["primary_ci_low"] is None and p is not None and n_boot > 0:
            row["primary_ci_low"], row["primary_ci_high"] = bootstrap_ci(p.test_labels, p.test_probs, metric,
                                                                         n_boot, seed)
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["primary"])  # stable: params order breaks ties
    for rank, i in enumerate(order, start=1):
        rows[i]["rank"] = rank
        rows[i]["winner"] = rank == 1
    best = order[0]
    for key, cost in (("pareto_time", "train_seconds"), ("pareto_params", "trainable_params")):
        flags = pareto_front([(r[cost], r["primary"]) for r in rows])
        for row, flag in zip(rows, flags, strict=True):
            row[key] = flag
    for i, row in enumerate(rows):
        row["vs_winner"] = None if i == best else _paired(rows[best], preds[best], row, preds[i], n_boot, seed)


def _paired(win: dict[str, Any], p_win: Predictions | None, row: dict[str, Any], p_row: Predictions | None,
            n_boot: int, seed: int) -> dict[str, Any]:
    """Winner minus ``row`` on the primary metric, paired over the same test items."""
    out: dict[str, Any] = {"against": win["label"], "diff": win["primary"] - row["primary"], "ci_low": None,
                           "ci_high": None, "p_value": None, "significant": None, "resamples": n_boot}
    if p_win is None or p_row is None:
        return {**out, "status": "predictions unavailable"}
    if not _same_items(p_win, p_row):
        return {**out, "status": "different test items"}
    if n_boot <= 0:
        return {**out, "status": "bootstrap disabled (evaluate.bootstrap = 0)"}
    test = paired_bootstrap(p_win.test_labels, p_win.test_probs, p_row.test_probs, win["primary_metric"],
                            n_boot, seed)
    return {**out, **test, "significant": bool(test["ci_low"] > 0 or test["ci_high"] < 0), "status": "tested"}


def finite_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with non-finite floats replaced by None (strict JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return [clean(r) for r in rows]

