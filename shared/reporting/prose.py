"""Per-domain summaries and the "what to use" paragraph, written from the rows alone."""

from __future__ import annotations

from typing import Any

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
                       "winner": winner["label"], "runner_up": runner["label"] if runner else None,
                       "lead": runner["vs_winner"] if runner else None,
                       "cheapest_on_front": front[0]["label"] if front else None,
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
    parts = [f"On {ds}, {w['label']} has the highest test {pm}: {_num(w['primary'])}{ci}."]
    use = w
    if len(ranked) > 1:
        r, lead = ranked[1], ranked[1]["vs_winner"]
        if lead["status"] == "tested":
            verdict = ("significant" if lead["significant"] else
                       "not significant, so the two are statistically indistinguishable on these test items")
            parts.append(f"Its lead over {r['label']} ({_num(r['primary'])}) is {_signed(lead['diff'])} "
                         f"(paired bootstrap over {r['n_test']} test items, 95% CI {_signed(lead['ci_low'])} to "
                         f"{_signed(lead['ci_high'])}, p = {lead['p_value']:.3f}): {verdict}.")
            faster = _ratio(w["train_seconds"], r["train_seconds"])
            if not lead["significant"] and faster is not None and faster >= MIN_SPEEDUP:
                use = r
                parts.append(f"{r['label']} trains {faster:.1f}x faster ({_seconds(r['train_seconds'])} vs "
                             f"{_seconds(w['train_seconds'])}).")
        else:
            parts.append(f"Its lead over {r['label']} ({_num(r['primary'])}) is {_signed(lead['diff'])}; "
                         f"not tested ({lead['status']}).")
    front = sorted((x for x in rows if x["pareto_time"]), key=lambda x: x["train_seconds"])
    cheap = front[0] if front else None
    if cheap is not None and cheap is not w and cheap is not use:
        saving = _ratio(w["train_seconds"], cheap["train_seconds"])
        times = f", {saving:.0f}x less than {w['label']}" if saving is not None and saving >= 1.5 else ""
        params = "" if cheap["trainable_params"] is None else \
            f", {_count(cheap['trainable_params'])} trainable parameters"
        parts.append(f"The cheapest regime on the cost/quality front is {cheap['label']}: "
                     f"{_seconds(cheap['train_seconds'])} of training{times}{params}, {pm} {_num(cheap['primary'])} "
                     f"({w['primary'] - cheap['primary']:.3f} below the winner).")
    scratch = next((x for x in rows if x["regime"] == "scratch"), None)
    if scratch is not None and w["regime"] != "scratch":
        parts.append(f"Transfer ({w['label']}) beats training from scratch by "
                     f"{_signed(w['primary'] - scratch['primary'])} {pm}.")
    parts.append(f"Use {use['label']}" + (" when training cost matters, otherwise "
                                             f"{w['label']}." if use is not w else "."))
    return " ".join(parts)


