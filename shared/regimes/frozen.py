"""``frozen``: logistic regression on the cached frozen features (``extract``), C chosen on validation."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from shared.evaluation.predictions import Predictions
from shared.files.atomic import write_safetensors
from shared.regimes.base import PACKAGE, FittedRegime, RegimeContext
from shared.regimes.probe import ProbeParams, probe_on_cache
from shared.registry import register_regime
from shared.training.loop import peak_memory_mb


def save_probe_network(ctx: RegimeContext, coef: np.ndarray, intercept: np.ndarray, folder: Path,
                       precision: str = "fp32") -> None:
    """The package of a probe: the domain's pretrained backbone (as ``extract`` ran it, in ``precision``) with
    the probe's raw-space weights in its head, so its softmax is the probe's probabilities."""
    from shared.models import feature_backbone, load_tokenizer
    from shared.regimes.finetune import init_head_from_probe
    from shared.serving.package import save_network

    assert ctx.card is not None
    dp = ctx.params
    model = feature_backbone(dp.model, ctx.domain.modality, ctx.data["train"].features["label"].num_classes)
    init_head_from_probe(model.head, coef, intercept)
    save_network(model, folder, replace(ctx.card, precision=precision),
                 tokenizer=load_tokenizer(dp.model) if ctx.domain.modality == "text" else None)


@register_regime
class Frozen(FittedRegime[ProbeParams]):
    """The backbone never trains: a linear probe on its pooled features."""

    name: ClassVar[str] = "frozen"
    description: ClassVar[str] = "linear probe (logistic regression) on cached frozen features"
    Params = ProbeParams
    needs_features: ClassVar[bool] = True

    def fit(self, ctx: RegimeContext, out: Path) -> tuple[Predictions, dict[str, Any]]:
        """Fit the probe; keep its weights (raw feature space) as ``weights.safetensors``."""
        t0 = time.perf_counter()
        probe, cache = probe_on_cache(ctx, self.params)
        seconds = time.perf_counter() - t0
        n_train = len(ctx.train_indices) if ctx.train_indices is not None else len(cache.read("train")[1])
        (x_val, y_val), (x_test, y_test) = cache.read("validation"), cache.read("test")
        coef, intercept = probe.raw_weights()
        write_safetensors(out / "weights.safetensors", {"weight": np.ascontiguousarray(coef, dtype=np.float32),
                                                        "bias": np.ascontiguousarray(intercept, dtype=np.float32)})
        preds = Predictions(probe.predict_proba(x_val), y_val, probe.predict_proba(x_test), y_test)
        if ctx.card is not None:  # servable: the pretrained backbone with the probe as its Linear head
            save_probe_network(ctx, coef, intercept, out / PACKAGE, cache.extraction().get("precision", "fp32"))
        trainable = int(coef.size + intercept.size)
        extraction = {f"extract_{k}": v for k, v in cache.extraction().items() if k.startswith("precision")}
        return preds, {**extraction, "trainable_params": trainable, "total_params": trainable, "probe_C": probe.C,
                       "val_score": probe.val_score, "train_seconds": seconds,
                       "train_samples_per_second": n_train * len(self.params.C_grid) / seconds,
                       "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}
