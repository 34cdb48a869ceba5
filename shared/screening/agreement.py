"""Predicted vs measured: how the screening's rankings of a domain's candidate backbones compare with what
training measured on the same data.

Per domain that trained at least two candidates, and per view (each regime, and "best regime": each
candidate's best test score over its regimes), every estimator gets:

* its ranking of the trained candidates and the measured one (primary test metric),
* Kendall's tau-b (``scipy.stats.kendalltau``) and the weighted tau (``scipy.stats.weightedtau``, hyperbolic
  weights: swaps near the top cost more), both between the estimator's scores and the measured metric,
* whether its top-1 candidate is the measured winner.

When every candidate was trained, it also says what picking the estimator's top-1 alone would have saved (the
training seconds of the other candidates) and lost (the measured winner's metric minus the pick's, best
regime). Across domains, :func:`hit_table` counts how often each estimator picked the winner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy.stats import kendalltau, weightedtau

BEST = "best regime"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def measured_scores(rows: Sequence[Mapping[str, Any]], regime: str | None) -> dict[str, float]:
    """Each candidate's primary test metric in ``regime`` (``None``: its best over the regimes)."""
    out: dict[str, float] = {}
    for row in rows:
        if regime is not None and row["regime"] != regime:
            continue
        value = float(row["primary"])
        out[row["candidate"]] = max(value, out.get(row["candidate"], -math.inf))
    return out


def compare_ranking(predicted: Mapping[str, float], measured: Mapping[str, float]) -> dict[str, Any]:
    """One estimator against the measured metric over the candidates both know (at least two): rankings
    (best first; ties keep the measured order), Kendall tau-b, weighted tau and the top-1 hit."""
    names = [c for c in measured if c in predicted]
    if len(names) < 2:
        raise ValueError(f"need at least two candidates scored and measured, got {names}")
    pred = [float(predicted[c]) for c in names]
    meas = [float(measured[c]) for c in names]
    pred_rank = sorted(names, key=lambda c: (-predicted[c], names.index(c)))
    meas_rank = sorted(names, key=lambda c: (-measured[c], names.index(c)))
    tau = kendalltau(pred, meas).statistic
    weighted = weightedtau(pred, meas).statistic
    best = max(meas)
    return {"predicted": pred_rank, "measured": meas_rank, "kendall_tau": _finite(tau),
            "weighted_tau": _finite(weighted),
            "top1_hit": measured[pred_rank[0]] == best}


def domain_agreement(screening: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The predicted-vs-measured record of one domain: ``screening`` is its ``reports/screening/<d>.json``,
    ``rows`` its report rows. None when fewer than two candidates were both scored and trained."""
    scores: Mapping[str, Mapping[str, Mapping[str, float]]] = screening.get("scores") or {}
    trained = list(dict.fromkeys(r["candidate"] for r in rows if r["candidate"] in scores))
    if len(trained) < 2:
        return None
    rows = [r for r in rows if r["candidate"] in trained]
    # an estimator some candidates lack (LEEP/NCE: no source head) is compared on those that have it
    having = {e: [c for c in trained if e in scores[c]] for e in dict.fromkeys(e for c in trained for e in scores[c])}
    estimators = [e for e, names in having.items() if len(names) >= 2]
    views: dict[str, Any] = {}
    for regime in [*dict.fromkeys(r["regime"] for r in rows), BEST]:
        measured = measured_scores(rows, None if regime == BEST else regime)
        if len(measured) < 2:
            continue
        views[regime] = {e: compare_ranking({c: scores[c][e]["score"] for c in having[e]}, measured)
                         for e in estimators}
    record: dict[str, Any] = {"domain": screening["domain"], "candidates": trained, "views": views,
                              "compared_on": {e: having[e] for e in estimators if having[e] != trained},
                              "not_compared": sorted(set(having) - set(estimators)),
                              "cost": _cost(screening, trained, estimators, rows)}
    if set(trained) == set(screening.get("candidates", [])):
        record["what_screening_saves"] = _savings(scores, rows, trained, estimators)
    return record


def _cost(screening: Mapping[str, Any], trained: list[str], estimators: list[str],
          rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds of each estimator over the trained candidates beside one fine-tuning epoch of each (summed: the
    screening scores every candidate once, training fine-tunes every one): the screen stage's estimate from
    timed steps and, when every candidate trained the full regime, the measured one (its train seconds over
    the epochs it ran)."""
    scores, epochs = screening["scores"], screening.get("fine_tuning_epoch", {})
    epoch = sum(float(epochs[c]["epoch_seconds"]) for c in trained if c in epochs) if epochs else None
    per = {e: sum(float(scores[c][e]["seconds"]) for c in trained if e in scores[c]) for e in estimators}
    total = sum(per.values())
    full = {r["candidate"]: float(r["train_seconds"]) / int(r["epochs_run"]) for r in rows
            if r["regime"] == "full" and r.get("train_seconds") and r.get("epochs_run")}
    measured = sum(full.values()) if set(full) == set(trained) else None
    return {"seconds": per, "all_seconds": total, "epoch_seconds": epoch,
            "all_vs_epoch": None if not epoch else total / epoch,
            "measured_epoch_seconds": measured, "all_vs_measured_epoch": None if not measured else total / measured}


def _savings(scores: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], trained: list[str],
             estimators: list[str]) -> dict[str, Any]:
    best = measured_scores(rows, None)
    winner = max(best.values())
    seconds = {c: sum(float(r.get("train_seconds") or 0.0) for r in rows if r["candidate"] == c) for c in trained}
    out = {}
    for e in estimators:
        names = [c for c in trained if e in scores[c]]  # its pick among the candidates it can score
        pick = max(names, key=lambda c: (scores[c][e]["score"], -trained.index(c)))
        out[e] = {"pick": pick, "saved_seconds": sum(v for c, v in seconds.items() if c != pick),
                  "all_seconds": sum(seconds.values()), "lost": winner - best[pick]}
    return out


def hit_table(records: Sequence[Mapping[str, Any]], view: str = BEST) -> dict[str, dict[str, int]]:
    """Across domains: per estimator, in how many domains it was compared and its top-1 was the winner."""
    out: dict[str, dict[str, int]] = {}
    for record in records:
        for estimator, result in record["views"].get(view, {}).items():
            entry = out.setdefault(estimator, {"domains": 0, "top1_hits": 0})
            entry["domains"] += 1
            entry["top1_hits"] += int(bool(result["top1_hit"]))
    return out


Section = tuple[str, list[str], list[str], list[list[str]]]  # title, paragraphs, header, body


def _tau(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def report_sections(records: Sequence[Mapping[str, Any]]) -> list[Section]:
    """The report's "predicted vs measured" tables: one per domain (every view x estimator), the
    cross-domain hit table, and per domain what screening would have saved and lost."""
    sections: list[Section] = []
    for record in records:
        header = ["view", "estimator", "predicted ranking", "measured ranking", "Kendall tau", "weighted tau",
                  "top-1 = winner"]
        body = [[view, e, " > ".join(r["predicted"]), " > ".join(r["measured"]), _tau(r["kendall_tau"]),
                 _tau(r["weighted_tau"]), "yes" if r["top1_hit"] else "**no**"]
                for view, results in record["views"].items() for e, r in results.items()]
        cost = record["cost"]
        notes = [f"Candidates trained: {', '.join(record['candidates'])}. Misses are marked **no**."]
        for e, names in record.get("compared_on", {}).items():
            notes.append(f"{e} ranks only {', '.join(names)} (LEEP and NCE need the pretrained source classifier, "
                         "which text encoders and random-init candidates lack); its top-1 is judged among them.")
        if record.get("not_compared"):
            notes.append(f"Not compared (fewer than two candidates scored): {', '.join(record['not_compared'])}.")
        if cost.get("all_vs_epoch") is not None:
            measured = cost.get("all_vs_measured_epoch")
            notes.append(f"Every score together took {cost['all_seconds']:.1f} s, "
                         f"{100 * cost['all_vs_epoch']:.1f}% of one estimated fine-tuning epoch of every "
                         f"candidate ({cost['epoch_seconds']:.0f} s)"
                         + ("." if measured is None else
                            f"; {100 * measured:.1f}% of one measured full fine-tuning epoch of every candidate "
                            f"({cost['measured_epoch_seconds']:.0f} s: train seconds / epochs run)."))
        sections.append((f"Screening {record['domain']}: predicted vs measured", notes, header, body))
        saves = record.get("what_screening_saves")
        if saves:
            sections.append((f"Screening {record['domain']}: what picking the top-1 alone saves and loses",
                             ["Training seconds of the other candidates (not spent) and the measured winner's "
                              "best-regime metric minus the pick's (lost)."],
                             ["estimator", "pick", "training saved", "of", "metric lost"],
                             [[e, s["pick"], f"{s['saved_seconds']:.0f} s", f"{s['all_seconds']:.0f} s",
                               f"{s['lost']:.4f}"] for e, s in saves.items()]))
    hits = hit_table(records)
    if hits:
        sections.append(("Screening across domains: top-1 hits (best regime)",
                         ["How often each estimator's top candidate was the measured winner."],
                         ["estimator", "domains", "top-1 hits"],
                         [[e, str(h["domains"]), str(h["top1_hits"])] for e, h in hits.items()]))
    return sections
