"""The self-contained HTML report (``reports/index.html``)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.reporting.prose import _signed, summarize
from shared.reporting.tables import DOMAIN_HEADER, _anchor_rows, _domain_cells, _our_anchor_row, anchors_for

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
                figures_dir: str = "figures", source: str = "",
                sections: Sequence[tuple[str, list[str], list[str], list[list[str]]]] = ()) -> str:
    """``index.html``: self-contained (inline CSS, no scripts); images are relative ``figures/*.png``;
    ``sections`` (title, paragraphs, header, body) follow the domains (the screening's tables)."""
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
    for title, paragraphs, header, body in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", *[f'<p class="note">{html.escape(t)}</p>' for t in paragraphs],
                  _table(header, [[c.replace("**", "") for c in cells] for cells in body])]
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
