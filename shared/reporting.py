"""Comparison tables and plots over the metrics JSON files of every (domain, regime)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("trainable_params", "train_seconds", "peak_memory_mb", "train_samples_per_second")


def collect(metrics_files: list[Path]) -> list[dict[str, Any]]:
    """One row per metrics file: identity, cost, and the test metrics."""
    rows = []
    for path in metrics_files:
        m = json.loads(path.read_text())
        test = m["test"]
        rows.append({
            "domain": m["domain"], "regime": m["regime"], "backbone": m["backbone"], "dataset": m["dataset"],
            "primary_metric": m["primary_metric"], "primary": test[m["primary_metric"]],
            "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "auroc": test["auroc"],
            **{k: m.get(k) for k in COLUMNS},
        })
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Domains x regimes as a markdown table; the best primary metric per domain in bold."""
    header = ["domain", "regime", "backbone", "accuracy", "macro_f1", "auroc", *COLUMNS]
    best = {}
    for r in rows:
        if r["domain"] not in best or r["primary"] > best[r["domain"]]["primary"]:
            best[r["domain"]] = r
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_fmt(r[k]) for k in header]
        if best[r["domain"]] is r:
            cells[1] = f"**{cells[1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per domain: the primary test metric of each regime."""
    domains = sorted({r["domain"] for r in rows})
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 3.8), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        sub = [r for r in rows if r["domain"] == domain]
        ax.bar([r["regime"] for r in sub], [r["primary"] for r in sub], color="#4c72b0")
        ax.set_title(f"{domain} (test {sub[0]['primary_metric']})")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=45)
        for i, r in enumerate(sub):
            ax.text(i, r["primary"] + 0.01, f"{r['primary']:.3f}", ha="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
