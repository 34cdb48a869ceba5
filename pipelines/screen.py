"""Stage ``screen@DOMAIN``: which candidate backbones train, decided before any training.

Scores every candidate of the domain (the top-level ``candidates`` entries ``DOMAIN/<backbone>``) on its
cached frozen features with every transferability estimator (:mod:`shared.screening.estimators`) and the
frozen probe's validation score, times each score, and estimates one full fine-tuning epoch from a few timed
steps. Writes ``reports/screening/DOMAIN.json`` (scores, rankings, seconds) and, per candidate,
``data/screening/DOMAIN/<candidate>.json`` saying whether it is a finalist (the top ``screen.finalists`` by
``screen.select_by``): the train stages depend on these, so they re-run when the choice changes, not when a
timing does. With one candidate there is nothing
to choose: it is the finalist and nothing is scored (the default run costs what it did).
"""

from __future__ import annotations

import time
from typing import Any

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths
from shared.files.atomic import write_json
from shared.screening.screen import (
    epoch_seconds_estimate,
    pick_finalists,
    score_candidate,
    steps_per_epoch,
    summary,
)


def fine_tuning_epoch(params: Any, domain: str, candidate: str, data: Any) -> dict[str, float]:
    """:func:`epoch_seconds_estimate` of full fine-tuning ``candidate`` at the domain's train batch size."""
    from shared.data.loaders import make_dataset, make_loader, split_batch
    from shared.models import build_model, load_tokenizer

    dp = params.candidate_params(domain, candidate)
    modality = params.domain_class(domain).modality
    train = dp.train_for("full") if dp.runs("full") else dp.train
    num_classes = data["train"].features["label"].num_classes
    model = build_model(dp.model, modality, num_classes, pretrained=True)
    tokenizer = load_tokenizer(dp.model) if modality == "text" else None
    first = data["train"].select(range(min(train.batch_size, len(data["train"]))))
    dataset = make_dataset(first, model, tokenizer=tokenizer, max_length=dp.model.max_length)
    batch = split_batch(next(iter(make_loader(dataset, train.batch_size, tokenizer=tokenizer))))
    steps = steps_per_epoch(len(data["train"]), train.batch_size, train.max_steps_per_epoch)
    return epoch_seconds_estimate(model, batch, steps)


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "")
    params, name, screen = stage.params, stage.domain.name, stage.dp.screen
    candidates = params.candidates_of(name)
    report: dict[str, Any] = {"domain": name, "candidates": candidates, "select_by": screen.select_by,
                              "finalists_setting": screen.finalists, "primary_metric": stage.domain.primary_metric}
    scores = None
    if len(candidates) > 1:
        from datasets import load_from_disk

        from shared.data.features import FeatureCache

        data = load_from_disk(str(paths.prepared_dir(name)))
        num_classes = data["train"].features["label"].num_classes
        scores, epochs = {}, {}
        for candidate in candidates:
            dp = params.candidate_params(name, candidate)
            cache = FeatureCache(paths.features_dir(name, candidate), dp.model)
            t0 = time.perf_counter()
            scores[candidate] = score_candidate(cache, dp, metric=stage.domain.primary_metric,
                                                num_classes=num_classes, seed=params.seed)
            epochs[candidate] = fine_tuning_epoch(params, name, candidate, data)
            shown = ", ".join(f"{k} {v['score']:.4g}" for k, v in scores[candidate].items())
            print(f"screen {name}/{candidate}: {shown} ({time.perf_counter() - t0:.1f} s; one fine-tuning epoch "
                  f"~{epochs[candidate]['epoch_seconds']:.0f} s)")
        report.update(scores=scores, fine_tuning_epoch=epochs, estimators=summary(scores))
    else:
        report["note"] = "one candidate: nothing to choose, nothing scored"
    finalists = pick_finalists(candidates, scores, screen)
    report["finalists"] = finalists
    write_json(paths.screening_file(name), report)
    with staged_output(paths.finalists_dir(name)) as folder:
        for candidate in candidates:  # one file each: a train stage re-runs only when its own choice changes
            write_json(folder / f"{candidate}.json", {"domain": name, "candidate": candidate,
                                                      "finalist": candidate in finalists})
    print(f"screen {name}: finalists {finalists}")
    return 0


if __name__ == "__main__":
    run_main(main)
