"""Stage ``evaluate@DOMAIN/CANDIDATE-REGIME``: metrics (with CIs and clinical operating points where they apply),
plots, and the metrics JSON; everything is logged to the regime's MLflow run, with the servable package as
the run's MLflow model (``model_uri`` in the metrics JSON; ``compare`` registers the winners)."""

from __future__ import annotations

import json
from typing import Any

import mlflow
from datasets import load_from_disk

from pipelines.common import left_out, parse_stage, run_main, staged_output
from shared import paths
from shared.evaluation.metrics import evaluate_predictions
from shared.evaluation.plots import save_confusion_matrix, save_evaluation_plots, save_note
from shared.evaluation.predictions import Predictions
from shared.files.atomic import write_json
from shared.regimes.base import PACKAGE
from shared.reporting import write_history_csv
from shared.serving.mlflow_model import log_package
from shared.serving.package import folder_bytes, raw_inputs
from shared.tracking import log_metrics, tracked_run

# the precision choices (shared/training/precision.py) of training, of the scoring forward ("eval_") and,
# for a probe on cached features, of the extraction ("extract_")
PRECISION_KEYS = ("precision", "precision_reason", "precision_fp32_step_seconds", "precision_bf16_step_seconds")
SUMMARY_KEYS = ("trainable_params", "total_params", "train_seconds", "epochs_run", "peak_memory_mb",
                "train_samples_per_second",
                *(f"{phase}{k}" for phase in ("", "eval_", "extract_") for k in PRECISION_KEYS))


def scalar_metrics(split: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Flat ``<split>_<name>`` numbers for MLflow (lists and nested objects stay in the JSON)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{split}_{key}"] = float(value)
    return out


def run_label(metrics: dict) -> str:
    """The run's name in the MLflow runs table once evaluated: domain, candidate, regime, the model, primary
    test metric and train time, e.g. ``vision-tf_efficientnet_lite0-lora | tf_efficientnet_lite0 + LoRA r=2 |
    accuracy 0.912 | 183 s``."""
    primary = metrics["primary_metric"]
    return (f"{metrics['domain']}-{metrics['candidate']}-{metrics['regime']} | {metrics['backbone']} | {primary} "
            f"{metrics['test'][primary]:.3f} | {metrics.get('train_seconds') or 0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "", with_regime=True, with_candidate=True)
    domain, regime, candidate = stage.domain, stage.regime or "", stage.candidate
    metrics_file = paths.metrics_file(domain.name, candidate, regime)
    if (reason := left_out(stage)) is not None:  # the outputs DVC expects, saying why nothing was evaluated
        write_json(metrics_file, {"domain": domain.name, "candidate": candidate, "regime": regime,
                                  "left_out": reason})
        with staged_output(paths.plots_dir(domain.name, candidate, regime)) as plots:
            save_note(reason, plots / "left_out.png")
        print(f"evaluate: {reason}; nothing evaluated")
        return 0
    model_dir = paths.model_dir(domain.name, candidate, regime)
    info = json.loads((model_dir / "run.json").read_text())
    preds = Predictions.load(model_dir / "predictions.safetensors")
    test = load_from_disk(str(paths.prepared_dir(domain.name) / "test"))
    class_names = test.features["label"].names
    result = evaluate_predictions(preds.val_labels, preds.val_probs, preds.test_labels, preds.test_probs,
                                  task=domain.task, class_names=class_names, params=stage.dp.evaluate,
                                  seed=stage.params.seed)
    metrics = {
        "domain": domain.name, "candidate": candidate, "regime": regime,
        "regime_description": stage.regime_plugin.description,
        "backbone": stage.regime_plugin.model_label(stage.dp, domain.modality),
        "dataset": stage.dp.data.dataset, "task": domain.task, "primary_metric": domain.primary_metric,
        "class_names": class_names, **{k: info.get(k) for k in SUMMARY_KEYS},
        "run_id": info["run_id"], **result,
    }
    with staged_output(paths.plots_dir(domain.name, candidate, regime)) as plots:
        figures = [save_confusion_matrix(result["test"]["confusion_matrix"], class_names,
                                         plots / "confusion_matrix.png",
                                         f"{domain.name} / {candidate} / {regime} (test)")]
        figures += save_evaluation_plots(preds.test_labels, preds.test_probs, domain.task, class_names, plots,
                                         threshold=result["test"].get("threshold"))
        if info.get("history"):  # per-epoch learning curves of trained regimes (dvc plots)
            write_history_csv(info["history"], plots / "history.csv")
        with tracked_run(domain.name, f"{domain.name}-{candidate}-{regime}", tags=stage.tags("evaluate"),
                         run_id=info["run_id"]):
            package = model_dir / PACKAGE
            if package.is_dir():  # the servable model (shared/serving): logged, then registered by compare
                logged = log_package(package, raw_inputs(test.select([0]))[0], result["test"].get("threshold"))
                metrics.update(model_uri=logged.model_uri, package_bytes=folder_bytes(package))
            if (model_dir / "weights.safetensors").is_file():  # what trained (an adapter: the adapter alone)
                metrics["trainable_bytes"] = (model_dir / "weights.safetensors").stat().st_size
                mlflow.log_artifact(str(model_dir / "weights.safetensors"), artifact_path="trainable")
            write_json(metrics_file, metrics)
            log_metrics({**scalar_metrics("test", result["test"]), **scalar_metrics("val", result["validation"]),
                         **{k: float(info[k]) for k in SUMMARY_KEYS
                            if isinstance(info.get(k), (int, float)) and not isinstance(info.get(k), bool)}})
            mlflow.set_tags({k: info[k] for k in SUMMARY_KEYS  # which precision ran each phase, and why
                             if k.endswith(("precision", "precision_reason")) and info.get(k)})
            mlflow.set_tag("mlflow.runName", run_label(metrics))  # what the runs table shows without setup
            mlflow.log_artifact(str(metrics_file))
            mlflow.log_artifact(str(model_dir / "predictions.safetensors"), artifact_path="predictions")
            for figure in figures:
                mlflow.log_artifact(str(figure), artifact_path="plots")
    print(f"{domain.name}/{candidate}/{regime}: test " + ", ".join(
        f"{k}={result['test'][k]:.4f}" for k in ("accuracy", "macro_f1", "auroc") if k in result["test"]))
    return 0


if __name__ == "__main__":
    run_main(main)
