"""Comparison figures (accuracy bars with CIs, cost-vs-quality fronts) and per-epoch history CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINNER_COLOR, OTHER_COLOR, FRONT_COLOR = "#c44e52", "#4c72b0", "#55a868"


# --- figures ------------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def _yerr(sub: list[dict[str, Any]]) -> np.ndarray | None:
    if any(r["primary_ci_low"] is None for r in sub):
        return None
    return np.array([[max(r["primary"] - r["primary_ci_low"], 0) for r in sub],
                     [max(r["primary_ci_high"] - r["primary"], 0) for r in sub]])


def bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per domain: the primary test metric of each regime (with its 95% CI when known)."""
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 3.8), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        sub = [r for r in rows if r["domain"] == domain]
        colors = [WINNER_COLOR if r.get("winner") else OTHER_COLOR for r in sub]
        ax.bar([r["label"] for r in sub], [r["primary"] for r in sub], color=colors, yerr=_yerr(sub), capsize=3)
        ax.set_title(f"{domain} (test {sub[0]['primary_metric']})")
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=45)
        for i, r in enumerate(sub):
            ax.text(i, min(r["primary"] + 0.01, 1.0), f"{r['primary']:.3f}", ha="center", fontsize=8)
    return _save(fig, path)


def _log_costs(values: list[float | None]) -> tuple[list[float | None], float]:
    """Costs for a log axis: zero becomes a floor one decade under the smallest positive cost."""
    positive = [v for v in values if v is not None and v > 0]
    floor = min(positive) / 10 if positive else 1e-3
    return [None if v is None else max(v, floor) for v in values], floor


def cost_quality_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """One domain: training time and trainable parameters (log x) vs the primary metric, Pareto front drawn."""
    pm = rows[0]["primary_metric"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, (cost, front_key, label) in zip(axes[0], (("train_seconds", "pareto_time", "training time (s)"),
                                                      ("trainable_params", "pareto_params", "trainable parameters")),
                                            strict=True):
        xs, _ = _log_costs([r[cost] for r in rows])
        shown = [(x, r) for x, r in zip(xs, rows, strict=True) if x is not None]
        for x, r in shown:
            err = None
            if r["primary_ci_low"] is not None:
                err = [[max(r["primary"] - r["primary_ci_low"], 0)], [max(r["primary_ci_high"] - r["primary"], 0)]]
            color = WINNER_COLOR if r["winner"] else (FRONT_COLOR if r[front_key] else OTHER_COLOR)
            ax.errorbar([x], [r["primary"]], yerr=err, fmt="o", color=color, capsize=3)
            ax.annotate(r["label"], (x, r["primary"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sorted((x, r["primary"]) for x, r in shown if r[front_key])
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=FRONT_COLOR, lw=1,
                    ls="--", label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        if shown:
            ax.set_xscale("log")
        missing = [r["label"] for r in rows if r[cost] is None]
        if missing:
            ax.text(0.01, 0.01, f"not applicable: {', '.join(missing)}", transform=ax.transAxes, fontsize=7)
        ax.set_xlabel(label + " (log)")
        ax.set_ylabel(f"test {pm}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{rows[0]['domain']}: cost vs quality ({rows[0]['dataset']})")
    return _save(fig, path)


def report_figures(rows: list[dict[str, Any]], folder: Path) -> dict[str, dict[str, str]]:
    """Per domain ``<domain>_primary.png`` and ``<domain>_cost.png`` in ``folder``; names relative to it."""
    out = {}
    for domain in dict.fromkeys(r["domain"] for r in rows):
        sub = [r for r in rows if r["domain"] == domain]
        bar_chart(sub, folder / f"{domain}_primary.png")
        cost_quality_chart(sub, folder / f"{domain}_cost.png")
        out[domain] = {"primary": f"{domain}_primary.png", "cost": f"{domain}_cost.png"}
    return out


def write_history_csv(history: list[Mapping[str, float]], path: Path) -> Path:
    """Per-epoch records (``train_loss``, ``val_loss``...) as a CSV with a 1-based ``epoch`` column (DVC plots)."""
    keys = list(dict.fromkeys(k for record in history for k in record))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch, record in enumerate(history, start=1):
            writer.writerow([epoch, *[record.get(k, "") for k in keys]])
    return path


