"""Predicted vs measured: rank agreement, top-1 hits and what screening saves, on hand-computed cases."""

from __future__ import annotations

import pytest

from shared.screening.agreement import BEST, compare_ranking, domain_agreement, hit_table, report_sections


def row(candidate: str, regime: str, primary: float, seconds: float = 10.0) -> dict:
    return {"domain": "d", "candidate": candidate, "regime": regime, "primary": primary, "train_seconds": seconds,
            "epochs_run": 2}


def screening(scores: dict[str, dict[str, float]], candidates: list[str] | None = None) -> dict:
    names = list(scores)
    estimators = sorted({e for s in scores.values() for e in s})
    return {"domain": "d", "candidates": candidates or names,
            "scores": {c: {e: {"score": v, "seconds": 0.5} for e, v in s.items()} for c, s in scores.items()},
            "estimators": {e: {} for e in estimators},
            "fine_tuning_epoch": {c: {"epoch_seconds": 20.0} for c in names}}


def test_kendall_tau_of_one_discordant_pair_in_three_is_one_third() -> None:
    # pairs (a,b) and (a,c) agree, (b,c) is swapped: (2 - 1) / 3
    result = compare_ranking({"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 0.9, "b": 0.7, "c": 0.8})
    assert result["kendall_tau"] == pytest.approx(1 / 3)
    assert result["predicted"] == ["a", "b", "c"] and result["measured"] == ["a", "c", "b"]
    assert result["top1_hit"] is True


def test_weighted_tau_punishes_a_swap_at_the_top_more_than_at_the_bottom() -> None:
    predicted = {"a": 3.0, "b": 2.0, "c": 1.0}
    top = compare_ranking(predicted, {"a": 0.8, "b": 0.9, "c": 0.7})
    bottom = compare_ranking(predicted, {"a": 0.9, "b": 0.7, "c": 0.8})
    assert top["kendall_tau"] == pytest.approx(bottom["kendall_tau"])
    assert top["weighted_tau"] < bottom["weighted_tau"]
    assert top["top1_hit"] is False


def test_perfect_and_reversed_rankings() -> None:
    assert compare_ranking({"a": 2.0, "b": 1.0}, {"a": 0.9, "b": 0.1})["kendall_tau"] == pytest.approx(1.0)
    reversed_ = compare_ranking({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.9, "b": 0.5, "c": 0.1})
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and not reversed_["top1_hit"]
    with pytest.raises(ValueError, match="at least two"):
        compare_ranking({"a": 1.0}, {"a": 0.5})


def test_domain_record_views_savings_and_hits() -> None:
    scores = {"big": {"logme": 2.0, "knn_accuracy": 0.6}, "small": {"logme": 1.0, "knn_accuracy": 0.7}}
    rows = [row("big", "frozen", 0.80, 5), row("big", "full", 0.90, 100),
            row("small", "frozen", 0.85, 3), row("small", "full", 0.88, 40)]
    record = domain_agreement(screening(scores), rows)
    assert record is not None
    assert list(record["views"]) == ["frozen", "full", BEST]
    assert record["views"]["frozen"]["logme"]["top1_hit"] is False  # small wins frozen
    assert record["views"][BEST]["logme"]["top1_hit"] is True       # big's full (0.90) is the best run
    assert record["views"][BEST]["knn_accuracy"]["top1_hit"] is False
    saves = record["what_screening_saves"]
    assert saves["logme"] == {"pick": "big", "saved_seconds": 43.0, "all_seconds": 148.0, "lost": 0.0}
    assert saves["knn_accuracy"]["pick"] == "small"
    assert saves["knn_accuracy"]["lost"] == pytest.approx(0.02)
    assert record["cost"]["all_seconds"] == pytest.approx(2.0) and record["cost"]["epoch_seconds"] == 40.0
    # measured: the full regime's train seconds over its 2 epochs, summed over candidates: 100 / 2 + 40 / 2
    assert record["cost"]["measured_epoch_seconds"] == 70.0
    assert record["cost"]["all_vs_measured_epoch"] == pytest.approx(2.0 / 70.0)
    no_full = domain_agreement(screening(scores), [r for r in rows if r["regime"] == "frozen"])
    assert no_full is not None and no_full["cost"]["measured_epoch_seconds"] is None
    assert hit_table([record]) == {"knn_accuracy": {"domains": 1, "top1_hits": 0},
                                   "logme": {"domains": 1, "top1_hits": 1}}
    titles = [title for title, *_ in report_sections([record])]
    assert titles == ["Screening d: predicted vs measured", "Screening d: what picking the top-1 alone saves and loses",
                      "Screening across domains: top-1 hits (best regime)"]
    assert "2.9% of one measured full fine-tuning epoch of every candidate (70 s" in report_sections([record])[0][1][-1]
    body = report_sections([record])[0][3]
    assert ["frozen", "logme", "big > small", "small > big", "-1.00", "-1.00", "**no**"] in body


def test_no_record_without_two_trained_candidates_and_no_savings_when_some_were_not_trained() -> None:
    scores = {"a": {"logme": 2.0}, "b": {"logme": 1.0}, "c": {"logme": 0.0}}
    assert domain_agreement(screening(scores), [row("a", "full", 0.9)]) is None
    one = {"domain": "d", "candidates": ["a"], "note": "one candidate"}
    assert domain_agreement(one, [row("a", "full", 0.9)]) is None
    record = domain_agreement(screening(scores), [row("a", "full", 0.9), row("b", "full", 0.95)])
    assert record is not None and record["candidates"] == ["a", "b"]
    assert "what_screening_saves" not in record  # c was screened out: its training time is unknown


def test_an_estimator_some_candidates_lack_is_compared_on_those_that_have_it() -> None:
    scores = {"a": {"logme": 1.0, "leep": -0.5}, "b": {"logme": 2.0, "leep": -0.2}, "random": {"logme": 3.0}}
    rows = [row("a", "full", 0.7), row("b", "full", 0.9), row("random", "full", 0.5)]
    record = domain_agreement(screening(scores), rows)
    assert record is not None and record["compared_on"] == {"leep": ["a", "b"]} and record["not_compared"] == []
    leep = record["views"]["full"]["leep"]
    assert leep["predicted"] == ["b", "a"] and leep["kendall_tau"] == pytest.approx(1.0) and leep["top1_hit"]
    assert record["views"]["full"]["logme"]["top1_hit"] is False  # it picked the random init
    assert record["what_screening_saves"]["leep"]["pick"] == "b"
    assert record["what_screening_saves"]["logme"]["lost"] == pytest.approx(0.4)
    one = domain_agreement(screening({"a": {"logme": 1.0, "leep": -0.5}, "r": {"logme": 2.0}}),
                           [row("a", "full", 0.7), row("r", "full", 0.5)])
    assert one is not None and one["not_compared"] == ["leep"]
