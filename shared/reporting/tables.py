"""Markdown tables and the markdown report, with the published reference numbers (anchors) beside ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from shared.reporting.prose import _count, _num, _seconds, _signed, summarize
from shared.reporting.rows import COLUMNS

ANCHORS_FILE = Path(__file__).with_name("anchors.yaml")


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
                 "trainable params", "train time", "peak memory (MB)", "throughput (samples/s)", "precision",
                 "Pareto front")


def _domain_cells(row: Mapping[str, Any]) -> list[str]:
    diff, p, sig = _vs(row)
    return [row["label"], row["backbone"], _ci(row), diff, p, sig, _count(row["trainable_params"]),
            _seconds(row["train_seconds"]), _amount(row["peak_memory_mb"]),
            _amount(row["train_samples_per_second"]), row.get("precision") or "—", _front_marks(row)]


def _anchor_rows(anchor: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = list(dict.fromkeys(k for e in anchor["entries"] for k in e["metrics"]))
    body = [[e["system"], e["setting"], *[_num(e["metrics"].get(m)) for m in metrics], e.get("source", "")]
            for e in anchor["entries"]]
    return ["system", "setting", *metrics, "source"], body


def _our_anchor_row(rows: list[dict[str, Any]], metrics: list[str]) -> list[list[str]]:
    out = []
    for row in sorted(rows, key=lambda r: r["rank"]):
        values = [_num(row.get(m)) if m in ("accuracy", "auroc", "macro_f1") else "n/a" for m in metrics]
        setting = f"{row.get('regime_description') or row['regime']}, {row['backbone']}"
        out.append([f"ours: {row['label']}", setting, *values, "this run"])
    return out


def markdown_report(rows: list[dict[str, Any]], anchors: Mapping[str, Any] | None = None,
                    settings: Mapping[str, str] | None = None, source: str = "",
                    sections: Sequence[tuple[str, list[str], list[str], list[list[str]]]] = ()) -> str:
    """``comparison.md``: the flat table, then per domain the paragraph, the ranked table and anchors, then
    ``sections`` (title, paragraphs, header, body: the screening's predicted vs measured tables)."""
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
    for title, paragraphs, header, body in sections:
        out += [f"## {title}", "", *[line for text in paragraphs for line in (text, "")],
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in body]
        out.append("")
    return "\n".join(out)


