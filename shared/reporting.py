"""The comparison product: tables, significance, cost/quality fronts, figures and the HTML/markdown report.

Everything here is a function of *measured* inputs: the metrics JSON that ``evaluate`` writes for every
(domain, regime) and, where available, its test-set probabilities (:class:`shared.predictions.Predictions`).
:func:`build_rows` turns those into one JSON-ready row per (domain, regime) -- the content of
``reports/comparison.json`` -- and every other artefact (:func:`summarize`, :func:`markdown_report`,
:func:`html_report`, the figures) is derived from the rows alone, so a report rebuilt from an MLflow
tracking server equals the one built from local files whenever the rows do.

Significance: the winner (highest primary test metric) is compared with every other regime by a paired
bootstrap on the same test items (:func:`shared.metrics.paired_bootstrap`); a lead is *significant* when
the 95% interval of the resampled differences excludes 0.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml

from shared.metrics import bootstrap_ci, paired_bootstrap
from shared.predictions import Predictions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("trainable_params", "train_seconds", "peak_memory_mb", "train_samples_per_second")
ANCHORS_FILE = Path(__file__).with_name("anchors.yaml")
WINNER_COLOR, OTHER_COLOR, FRONT_COLOR = "#c44e52", "#4c72b0", "#55a868"


# --- rows ---------------------------------------------------------------------------------------


def collect(metrics_files: list[Path]) -> list[dict[str, Any]]:
    """One basic row per metrics file: identity, cost, and the test metrics (no significance)."""
    return [basic_row(json.loads(Path(path).read_text())) for path in metrics_files]


def basic_row(m: Mapping[str, Any]) -> dict[str, Any]:
    """Identity, primary metric (+ its CI when the metrics JSON has one), headline metrics and cost."""
    test, pm = m["test"], m["primary_metric"]
    return {
        "domain": m["domain"], "regime": m["regime"], "backbone": m["backbone"], "dataset": m["dataset"],
        "task": m.get("task"), "primary_metric": pm, "primary": test[pm],
        "primary_ci_low": test.get(f"{pm}_ci_low"), "primary_ci_high": test.get(f"{pm}_ci_high"),
        "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "auroc": test["auroc"],
        "total_params": m.get("total_params"), **{k: m.get(k) for k in COLUMNS}, "run_id": m.get("run_id"),
    }


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
    out: dict[str, Any] = {"against": win["regime"], "diff": win["primary"] - row["primary"], "ci_low": None,
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


# --- per-domain summary and the "what to use" paragraph ------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per domain: winner, runner-up, the lead test, the cheapest point of the time front, the paragraph."""
    out = {}
    for domain in dict.fromkeys(r["domain"] for r in rows):
        sub = [r for r in rows if r["domain"] == domain]
        ranked = sorted(sub, key=lambda r: r["rank"])
        winner = ranked[0]
        runner = ranked[1] if len(ranked) > 1 else None
        front = sorted((r for r in sub if r["pareto_time"]), key=lambda r: r["train_seconds"])
        out[domain] = {"dataset": winner["dataset"], "primary_metric": winner["primary_metric"],
                       "winner": winner["regime"], "runner_up": runner["regime"] if runner else None,
                       "lead": runner["vs_winner"] if runner else None,
                       "cheapest_on_front": front[0]["regime"] if front else None,
                       "recommendation": recommendation(sub)}
    return out


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    """``+0.123`` / ``-0.123``, never ``-0.000``."""
    return f"{round(value, 3) + 0.0:+.3f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _count(value: int | float | None) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{int(value)}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


# a runner-up within noise of the winner is recommended for cost only if it trains at least this much faster
# (timings of one run on a shared machine vary by several percent)
MIN_SPEEDUP = 1.2


def recommendation(rows: list[dict[str, Any]]) -> str:
    """The "what to use" paragraph of one domain: templates filled with measured values only."""
    ranked = sorted(rows, key=lambda r: r["rank"])
    w = ranked[0]
    pm, ds = w["primary_metric"], w["dataset"]
    ci = "" if w["primary_ci_low"] is None else f", 95% CI {_num(w['primary_ci_low'])}-{_num(w['primary_ci_high'])}"
    parts = [f"On {ds}, {w['regime']} has the highest test {pm}: {_num(w['primary'])}{ci}."]
    use = w
    if len(ranked) > 1:
        r, lead = ranked[1], ranked[1]["vs_winner"]
        if lead["status"] == "tested":
            verdict = ("significant" if lead["significant"] else
                       "not significant, so the two are statistically indistinguishable on these test items")
            parts.append(f"Its lead over {r['regime']} ({_num(r['primary'])}) is {_signed(lead['diff'])} "
                         f"(paired bootstrap over {r['n_test']} test items, 95% CI {_signed(lead['ci_low'])} to "
                         f"{_signed(lead['ci_high'])}, p = {lead['p_value']:.3f}): {verdict}.")
            faster = _ratio(w["train_seconds"], r["train_seconds"])
            if not lead["significant"] and faster is not None and faster >= MIN_SPEEDUP:
                use = r
                parts.append(f"{r['regime']} trains {faster:.1f}x faster ({_seconds(r['train_seconds'])} vs "
                             f"{_seconds(w['train_seconds'])}).")
        else:
            parts.append(f"Its lead over {r['regime']} ({_num(r['primary'])}) is {_signed(lead['diff'])}; "
                         f"not tested ({lead['status']}).")
    front = sorted((x for x in rows if x["pareto_time"]), key=lambda x: x["train_seconds"])
    cheap = front[0] if front else None
    if cheap is not None and cheap is not w and cheap is not use:
        saving = _ratio(w["train_seconds"], cheap["train_seconds"])
        times = f", {saving:.0f}x less than {w['regime']}" if saving is not None and saving >= 1.5 else ""
        params = "" if cheap["trainable_params"] is None else \
            f", {_count(cheap['trainable_params'])} trainable parameters"
        parts.append(f"The cheapest regime on the cost/quality front is {cheap['regime']}: "
                     f"{_seconds(cheap['train_seconds'])} of training{times}{params}, {pm} {_num(cheap['primary'])} "
                     f"({w['primary'] - cheap['primary']:.3f} below the winner).")
    scratch = next((x for x in rows if x["regime"] == "scratch"), None)
    if scratch is not None and w["regime"] != "scratch":
        parts.append(f"Transfer ({w['regime']}) beats training from scratch by "
                     f"{_signed(w['primary'] - scratch['primary'])} {pm}.")
    parts.append(f"Use {use['regime']}" + (" when training cost matters, otherwise "
                                             f"{w['regime']}." if use is not w else "."))
    return " ".join(parts)


# --- anchors ------------------------------------------------------------------------------------


def load_anchors(path: Path | None = None) -> dict[str, Any]:
    """The published reference numbers (``shared/anchors.yaml``): {domain: {dataset: {...}}}."""
    return yaml.safe_load(Path(path or ANCHORS_FILE).read_text()) or {}


def anchors_for(anchors: Mapping[str, Any], domain: str, dataset: str) -> dict[str, Any] | None:
    """The anchors of ``domain`` measured on ``dataset`` (None when there are none for that dataset)."""
    return (anchors.get(domain) or {}).get(dataset)


# --- text tables --------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Domains x regimes as a markdown table; the best primary metric per domain in bold."""
    header = ["domain", "regime", "backbone", "accuracy", "macro_f1", "auroc", *COLUMNS]
    best: dict[str, dict[str, Any]] = {}
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


def _amount(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ci(row: Mapping[str, Any]) -> str:
    if row["primary_ci_low"] is None:
        return _num(row["primary"])
    return f"{_num(row['primary'])} [{_num(row['primary_ci_low'])}, {_num(row['primary_ci_high'])}]"


def _vs(row: Mapping[str, Any]) -> tuple[str, str, str]:
    vs = row["vs_winner"]
    if vs is None:
        return "winner", "", ""
    if vs["status"] != "tested":
        return _signed(-vs["diff"]), "", vs["status"]
    return (f"{_signed(-vs['diff'])} [{_signed(-vs['ci_high'])}, {_signed(-vs['ci_low'])}]", f"{vs['p_value']:.3f}",
            "yes" if vs["significant"] else "no")


def _front_marks(row: Mapping[str, Any]) -> str:
    return ", ".join(name for key, name in (("pareto_time", "time"), ("pareto_params", "params")) if row[key])


DOMAIN_HEADER = ("regime", "backbone", "primary [95% CI]", "vs winner [95% CI]", "p", "significant",
                 "trainable params", "train time", "peak memory (MB)", "throughput (samples/s)", "Pareto front")


def _domain_cells(row: Mapping[str, Any]) -> list[str]:
    diff, p, sig = _vs(row)
    return [row["regime"], row["backbone"], _ci(row), diff, p, sig, _count(row["trainable_params"]),
            _seconds(row["train_seconds"]), _amount(row["peak_memory_mb"]),
            _amount(row["train_samples_per_second"]), _front_marks(row)]


def _anchor_rows(anchor: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = list(dict.fromkeys(k for e in anchor["entries"] for k in e["metrics"]))
    body = [[e["system"], e["setting"], *[_num(e["metrics"].get(m)) for m in metrics], e.get("source", "")]
            for e in anchor["entries"]]
    return ["system", "setting", *metrics, "source"], body


REGIME_SETTINGS = {"scratch": "from scratch (random init)", "frozen": "linear probe (frozen features)",
                   "partial": "partial fine-tuning (last blocks)", "full": "end-to-end fine-tuning",
                   "lora": "LoRA adapters + head", "lp_ft": "linear probe, then end-to-end fine-tuning",
                   "baseline": "classical baseline + logistic regression"}


def _our_anchor_row(rows: list[dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    out = []
    for row in sorted(rows, key=lambda r: r["rank"]):
        values = [_num(row.get(m)) if m in ("accuracy", "auroc", "macro_f1") else "n/a" for m in metrics]
        setting = f"{REGIME_SETTINGS.get(row['regime'], row['regime'])}, {row['backbone']}"
        out.append([f"ours: {row['regime']}", setting, *values, "this run"])
    return out


def markdown_report(rows: list[dict[str, Any]], anchors: Mapping[str, Any] | None = None,
                    settings: Mapping[str, str] | None = None, source: str = "") -> str:
    """``comparison.md``: the flat table, then per domain the paragraph, the ranked table and anchors."""
    anchors, settings = anchors or {}, settings or {}
    summary = summarize(rows)
    out = ["# transferlab comparison (test split)", ""]
    if source:
        out += [f"Source: {source}", ""]
    out += [markdown_table(rows), ""]
    for domain, s in summary.items():
        sub = [r for r in rows if r["domain"] == domain]
        out += [f"## {domain} ({s['dataset']}, primary metric: {s['primary_metric']})", "", s["recommendation"], "",
                "| " + " | ".join(DOMAIN_HEADER) + " |", "|" + "---|" * len(DOMAIN_HEADER)]
        out += ["| " + " | ".join(_domain_cells(r)) + " |" for r in sorted(sub, key=lambda r: r["rank"])]
        anchor = anchors_for(anchors, domain, s["dataset"])
        if anchor:
            header, body = _anchor_rows(anchor)
            body += _our_anchor_row(sub, header[2:-1])
            out += ["", f"Published results ({anchor['split']}), not measured by us. Our rows: "
                    f"{settings.get(domain, 'this run')}.", "",
                    "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(cells) + " |" for cells in body]
            out += [f"- {note}" for note in anchor.get("notes", [])]
        out.append("")
    return "\n".join(out)


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
        ax.bar([r["regime"] for r in sub], [r["primary"] for r in sub], color=colors, yerr=_yerr(sub), capsize=3)
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
            ax.annotate(r["regime"], (x, r["primary"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sorted((x, r["primary"]) for x, r in shown if r[front_key])
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=FRONT_COLOR, lw=1,
                    ls="--", label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        if shown:
            ax.set_xscale("log")
        missing = [r["regime"] for r in rows if r[cost] is None]
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


# --- HTML ---------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, td:nth-child(2), th { text-align: left; }
tr.winner td { background: #fdecea; font-weight: 600; } tr.ours td { background: #eef5ee; }
p.rec { background: #f7f9fc; border-left: 4px solid #4c72b0; padding: 0.6em 1em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0.3em 0.3em 0; }
.figs { display: flex; flex-wrap: wrap; align-items: flex-start; }
.note { color: #666; font-size: 0.85em; }
"""


def _table(header: Sequence[str], body: Iterable[Sequence[str]], classes: Iterable[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for cells, cls in zip(body, classes or _forever(""), strict=False):
        attr = f' class="{cls}"' if cls else ""
        lines.append(f"<tr{attr}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _forever(value: str) -> Iterable[str]:
    while True:
        yield value


def html_report(rows: list[dict[str, Any]], figures: Mapping[str, Mapping[str, str]], *,
                anchors: Mapping[str, Any] | None = None, settings: Mapping[str, str] | None = None,
                figures_dir: str = "figures", source: str = "") -> str:
    """``index.html``: self-contained (inline CSS, no scripts); images are relative ``figures/*.png``."""
    anchors, settings = anchors or {}, settings or {}
    summary = summarize(rows)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>transferlab comparison</title>", f"<style>{CSS}</style></head><body>",
             "<h1>transferlab: which transfer regime wins?</h1>",
             '<p class="note">Test split. Primary metric per domain with its 95% bootstrap CI; "vs winner" is '
             "the paired bootstrap difference (this regime minus the winner) on the same test items; a "
             "difference is significant when its 95% CI excludes 0. Pareto front: no other regime is both "
             f"cheaper and better. Training time is the fit alone: the frozen probe (and lp_ft's probe) reuse features "
             "that the extract stage computes once per domain. "
             f"{html.escape(source)}</p>"]
    overview = [[d, s["dataset"], s["primary_metric"], s["winner"], s["runner_up"] or "",
                 _lead_text(s["lead"]), s["cheapest_on_front"] or ""] for d, s in summary.items()]
    parts += ["<h2>Overview</h2>", _table(["domain", "dataset", "primary metric", "winner", "runner-up",
                                           "lead over runner-up", "cheapest on time front"], overview)]
    for domain, s in summary.items():
        sub = sorted((r for r in rows if r["domain"] == domain), key=lambda r: r["rank"])
        parts += [f'<h2 id="{html.escape(domain)}">{html.escape(domain)} '
                  f"<small>({html.escape(s['dataset'])}, {html.escape(s['primary_metric'])})</small></h2>",
                  f'<p class="rec"><b>What to use.</b> {html.escape(s["recommendation"])}</p>',
                  _table(DOMAIN_HEADER, [_domain_cells(r) for r in sub],
                         ["winner" if r["winner"] else "" for r in sub])]
        images = [f'<img src="{html.escape(figures_dir)}/{html.escape(name)}" alt="{html.escape(domain)}: {alt}">'
                  for key, alt in (("primary", "primary metric with 95% CI"), ("cost", "cost vs quality"))
                  if (name := figures.get(domain, {}).get(key))]
        parts.append('<div class="figs">' + "".join(images) + "</div>")
        anchor = anchors_for(anchors, domain, s["dataset"])
        if anchor:
            header, body = _anchor_rows(anchor)
            ours = _our_anchor_row(sub, header[2:-1])
            parts += [f"<h3>Published results ({html.escape(anchor['split'])})</h3>",
                      '<p class="note">Published numbers, not measured by us; each row names its setting. '
                      f"Our rows (green) are this run: {html.escape(settings.get(domain, ''))}.</p>",
                      _table(header, body + ours, [""] * len(body) + ["ours"] * len(ours))]
            parts += [f'<p class="note">{html.escape(n)}</p>' for n in anchor.get("notes", [])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _lead_text(lead: Mapping[str, Any] | None) -> str:
    if lead is None:
        return ""
    if lead["status"] != "tested":
        return f"{_signed(lead['diff'])} (not tested: {lead['status']})"
    verdict = "significant" if lead["significant"] else "not significant"
    return (f"{_signed(lead['diff'])} [{_signed(lead['ci_low'])}, {_signed(lead['ci_high'])}], "
            f"p={lead['p_value']:.3f}, {verdict}")


def finite_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with non-finite floats replaced by None (strict JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return [clean(r) for r in rows]

