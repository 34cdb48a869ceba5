"""Stage ``extract@DOMAIN``: pooled features of the frozen pretrained backbone for every split,
cached as safetensors keyed by backbone (the frozen probe and lp_ft read them)."""

from __future__ import annotations

import time

import torch
from datasets import load_from_disk

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths
from shared.data.domain import SPLITS
from shared.data.features import FeatureCache, extract_features
from shared.data.loaders import make_dataset, make_loader
from shared.models import feature_backbone, load_tokenizer


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "")
    domain, model_params = stage.domain, stage.dp.model
    dd = load_from_disk(str(paths.prepared_dir(domain.name)))
    num_classes = dd["train"].features["label"].num_classes
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = feature_backbone(model_params, domain.modality, num_classes).to(device)
    tokenizer = load_tokenizer(model_params) if domain.modality == "text" else None
    with staged_output(paths.features_dir(domain.name)) as tmp:
        cache = FeatureCache(tmp, model_params)
        for split in SPLITS:
            dataset = make_dataset(dd[split], model, tokenizer=tokenizer, max_length=model_params.max_length,
                                   sort_by_length=True)
            loader = make_loader(dataset, model_params.extract_batch_size, tokenizer=tokenizer)
            t0 = time.perf_counter()
            features, labels = extract_features(model, loader, device)
            cache.write(split, features, labels)
            rate = len(labels) / (time.perf_counter() - t0)
            print(f"extract {domain.name}/{split}: {features.shape} at {rate:.1f} items/s")
    return 0


if __name__ == "__main__":
    run_main(main)
