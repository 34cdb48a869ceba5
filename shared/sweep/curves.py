"""Summaries of a sweep's points: curves over the label fraction, crossovers with the frozen probe, and
the figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from shared.files.atomic import atomic_path

PROBE = "frozen"


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
