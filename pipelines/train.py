"""Stage ``train@DOMAIN/CANDIDATE-REGIME``: run one regime (the registry's) on one candidate backbone, keep
what it learned, and write validation/test probabilities for ``evaluate``, and the servable model package
(``package/``: the complete model, see :mod:`shared.serving.package`). One MLflow run per (domain, candidate,
regime); a candidate that is not a finalist of ``screen@DOMAIN`` trains nothing (the stage says why).

Runs unchanged on several processes (DDP)::

    accelerate launch --multi_gpu --num_processes 2 -m pipelines.train --domain vision/tf_efficientnet_lite0 \
        --regime full

(on a machine without CUDA this trains on the CPU with the gloo backend; ``torchrun --nproc_per_node 2 -m
pipelines.train ...`` does the same). Every process trains; only the main one opens the MLflow run, logs,
and writes the stage's outputs. Regimes that fit on their own (frozen, baseline) run on the main process.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from pipelines.common import LEFT_OUT, Stage, left_out, parse_stage, run_main, staged_output
from shared import paths
from shared.files.atomic import write_json
from shared.files.imports import CODE_ROOT, digest_files, import_closure
from shared.regimes.base import RegimeContext
from shared.serving.package import ModelCard
from shared.tracking import init_store, log_splits, tracked_run
from shared.training.loop import distributed_state
from shared.training.run import run_regime


def checkpoint_dir(stage: Stage) -> Path:
    """Resumable checkpoints, keyed by everything the run depends on: seed, params, the content of the
    stage's data inputs and of the code it runs. A change starts afresh; other keys' folders are pruned."""
    name, regime, candidate = stage.domain.name, stage.regime or "", stage.candidate
    root = paths.root()
    code = import_closure(["pipelines.train", type(stage.domain).__module__, type(stage.regime_plugin).__module__],
                          CODE_ROOT)
    key = json.dumps({"seed": stage.params.seed, "params": stage.dp.model_dump(mode="json", exclude={"regimes"}),
                      "regime": stage.regime_plugin.params.model_dump(mode="json"),
                      "data": digest_files([paths.prepared_dir(name), paths.features_dir(name, candidate)], root),
                      "code": digest_files(code, CODE_ROOT)}, sort_keys=True)
    parent = paths.checkpoint_dir(name, candidate, regime)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    if parent.is_dir():
        for stale in parent.iterdir():
            if stale.name != digest:
                shutil.rmtree(stale, ignore_errors=True)
    return parent / digest


def model_card(stage: Stage, data: DatasetDict) -> ModelCard:
    """The card of the servable package this stage writes (``models/<d>/<candidate>/<r>/package``)."""
    domain = stage.domain
    return ModelCard(domain=domain.name, regime=stage.regime or "", modality=domain.modality, task=domain.task,
                     class_names=list(data["train"].features["label"].names), kind="network",
                     model=stage.dp.model.model_dump(mode="json", exclude={"weights_file", "extract_batch_size"}))


def context(stage: Stage, checkpoints: Path | None) -> RegimeContext:
    """The regime's view of this stage."""
    data = load_from_disk(str(paths.prepared_dir(stage.domain.name)))
    return RegimeContext(domain=stage.domain, seed=stage.params.seed, data=data,
                         features_dir=paths.features_dir(stage.domain.name, stage.candidate), checkpoints=checkpoints,
                         card=model_card(stage, data))


def main(argv: list[str] | None = None) -> int:
    """Run the stage (on every process of a multi-process launch; see the module docstring)."""
    stage = parse_stage(argv, __doc__ or "", with_regime=True, with_candidate=True)
    if (reason := left_out(stage)) is not None:
        with staged_output(paths.model_dir(stage.domain.name, stage.candidate, stage.regime or "")) as out:
            write_json(out / LEFT_OUT, {"domain": stage.domain.name, "backbone": stage.candidate,
                                        "regime": stage.regime, "left_out": reason})
        print(f"train: {reason}; nothing trained")
        return 0
    regime, name, candidate = stage.regime_plugin, stage.domain.name, stage.candidate
    ckpt = checkpoint_dir(stage) if regime.trains_network else None
    if not distributed_state().is_main_process:
        if regime.trains_network:
            run_regime(regime, context(stage, ckpt), None)
        return 0  # the main process logs and writes everything
    init_store([name])
    with staged_output(paths.model_dir(name, candidate, regime.name)) as out, tracked_run(
        name, f"{name}-{candidate}-{regime.name}", tags=stage.tags("train"),
        params={"seed": stage.params.seed, "regime": regime.name, **stage.dp.model_dump(exclude={"regimes"}),
                "regimes": {regime.name: regime.params.model_dump()}},
    ) as run:
        ctx = context(stage, ckpt)
        log_splits(ctx.data, name, paths.prepared_dir(name))  # the runs table's Dataset column, the lineage
        preds, info = run_regime(regime, ctx, out)
        preds.save(out / "predictions.safetensors")
        info.setdefault("train_seconds", 0.0)
        write_json(out / "run.json", {"run_id": run.info.run_id, "domain": name, "backbone": candidate,
                                      "regime": regime.name, **info})
    return 0


if __name__ == "__main__":
    run_main(main)
