"""Screening one domain's candidate backbones: every estimator on each candidate's cached frozen features,
the frozen probe's validation score, the estimated seconds of one fine-tuning epoch, and the finalists.

What ``screen@<domain>`` (``pipelines/screen.py``) runs; the comparison report later sets these predictions
beside the rankings training measured (:mod:`shared.screening.agreement`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.config import DomainParams, ScreenParams

if TYPE_CHECKING:  # the scoring imports scikit-learn and SciPy; choosing among one candidate needs neither
    from shared.data.features import FeatureCache
    from shared.regimes.probe import ProbeParams

Scores = dict[str, dict[str, float]]  # {estimator: {"score": value, "seconds": wall time}}


def probe_params(dp: DomainParams) -> ProbeParams:
    """The probe the domain's frozen regime fits (its C grid), or the default one where frozen is left out."""
    from shared.regimes.probe import ProbeParams

    section = dp.regimes.get("frozen")
    return section if isinstance(section, ProbeParams) else ProbeParams()


def score_candidate(cache: FeatureCache, dp: DomainParams, *, metric: str, num_classes: int, seed: int
                    ) -> Scores:
    """Every applicable estimator on one candidate's train features (kNN and the probe scored on validation;
    LEEP and NCE where the cache holds source-head probabilities), each with its seconds."""
    from shared.regimes.probe import fit_probe
    from shared.screening.estimators import score_all

    train_x, train_y = cache.read("train")
    val_x, val_y = cache.read("validation")
    source = cache.read_source_probs("train")
    scores = score_all(train_x, train_y, val_x, val_y, source, k=dp.screen.knn_neighbours)
    probe = probe_params(dp)
    start = time.perf_counter()
    fitted = fit_probe((train_x, train_y), (val_x, val_y), probe.C_grid, metric=metric, max_iter=probe.max_iter,
                       seed=seed, num_classes=num_classes)
    scores["probe"] = {"score": float(fitted.val_score), "seconds": time.perf_counter() - start}
    return scores


def ranking(scores: Mapping[str, Scores], estimator: str) -> list[str]:
    """Candidates best first by ``estimator`` (ties keep the candidates' order); an estimator some candidate
    lacks (LEEP/NCE without a source head) is an error naming them."""
    lacking = [c for c, s in scores.items() if estimator not in s]
    if lacking:
        raise ValueError(f"screen.select_by {estimator!r} has no score for {lacking} (LEEP and NCE need a "
                         "pretrained backbone with its source classifier); choose another estimator")
    order = list(scores)
    return sorted(order, key=lambda c: (-scores[c][estimator]["score"], order.index(c)))


def pick_finalists(candidates: list[str], scores: Mapping[str, Scores] | None, screen: ScreenParams) -> list[str]:
    """The candidates to train: all of them (``finalists: all``, or no more candidates than finalists), else
    the top ``finalists`` by ``select_by``, best first."""
    if screen.finalists == "all" or (isinstance(screen.finalists, int) and screen.finalists >= len(candidates)):
        return list(candidates)
    if scores is None:
        raise ValueError("more candidates than finalists, but nothing was scored")
    return ranking(scores, screen.select_by)[: int(screen.finalists)]


def epoch_seconds_estimate(model: Any, batch: tuple[Any, Any], steps_per_epoch: int) -> dict[str, float]:
    """Seconds of one full fine-tuning epoch, estimated from timed fp32 AdamW steps of ``model`` on ``batch``
    (:func:`shared.training.precision.step_seconds`, the fastest of three after a warm-up) times the epoch's
    steps."""
    from shared.training.precision import step_seconds

    inputs, labels = batch
    step = step_seconds(model, inputs, labels)["fp32"]
    return {"step_seconds": step, "steps_per_epoch": float(steps_per_epoch), "epoch_seconds": step * steps_per_epoch}


def steps_per_epoch(train_items: int, batch_size: int, cap: int | None) -> int:
    """Optimizer steps in one epoch of ``train_items`` at ``batch_size`` (``train.max_steps_per_epoch`` caps)."""
    steps = math.ceil(train_items / batch_size)
    return min(steps, cap) if cap else steps


def summary(scores: Mapping[str, Scores]) -> dict[str, dict[str, Any]]:
    """Per estimator: its ranking of the candidates and its total seconds over them."""
    names = sorted({e for s in scores.values() for e in s})
    out = {}
    for name in names:
        if all(name in s for s in scores.values()):
            out[name] = {"ranking": ranking(scores, name),
                         "seconds": float(np.sum([s[name]["seconds"] for s in scores.values()]))}
    return out
