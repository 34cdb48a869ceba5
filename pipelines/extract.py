"""Stage ``extract@DOMAIN/CANDIDATE``: pooled features of one frozen candidate backbone for every split,
cached as safetensors in ``data/features/<domain>/<candidate>`` (the frozen probe, lp_ft and the screening
read them). A pretrained image backbone keeps its source head (timm's ImageNet classifier), whose class
probabilities are stored beside the features for the screening's LEEP and NCE. The forward passes run in
``model.extract_precision`` (``auto``: timed on a median-length train batch, :mod:`shared.training.precision`;
an image backbone's bf16 passes run channels-last on the CPU); the choice and its timings are in
``extraction.json`` beside the features."""

from __future__ import annotations

import time

import torch
from datasets import load_from_disk

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths
from shared.data.domain import SPLITS
from shared.data.features import FeatureCache, extract_features
from shared.data.loaders import make_dataset, make_loader, timing_batch
from shared.files.atomic import write_json
from shared.files.imports import digest_files
from shared.models import feature_backbone, load_tokenizer, source_classes
from shared.training.precision import choose_precision, forward_layouts, forward_seconds, use_channels_last


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "", with_candidate=True)
    domain, model_params = stage.domain, stage.dp.model
    dd = load_from_disk(str(paths.prepared_dir(domain.name)))
    num_classes = dd["train"].features["label"].num_classes
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = source_classes(model_params, domain.modality)
    model = feature_backbone(model_params, domain.modality, source or num_classes).to(device)
    tokenizer = load_tokenizer(model_params) if domain.modality == "text" else None
    loaders = {split: make_loader(make_dataset(dd[split], model, tokenizer=tokenizer,
                                               max_length=model_params.max_length, sort_by_length=True),
                                  model_params.extract_batch_size, tokenizer=tokenizer) for split in SPLITS}
    model.eval()
    precision = choose_precision(
        model_params.extract_precision, device=device, model=model.features,
        batch=lambda: timing_batch(loaders["train"]),  # a median-length batch
        key={"phase": "extract", "backbone": model_params.name, "image_size": model_params.image_size,
             "max_length": model_params.max_length, "batch_size": model_params.extract_batch_size,
             **forward_layouts(None, model, device)},
        timer=forward_seconds)
    channels_last = use_channels_last(None, model, device, precision.precision, forward_only=True)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    print(f"extract {domain.name}/{stage.candidate}: {precision.precision} ({precision.reason})"
          f"{', channels-last' if channels_last else ''}")
    record: dict[str, object] = {**precision.record(), "channels_last": channels_last}
    with staged_output(paths.features_dir(domain.name, stage.candidate)) as tmp:
        cache = FeatureCache(tmp, model_params)
        for split, loader in loaders.items():
            t0 = time.perf_counter()
            features, labels = extract_features(model, loader, device, precision.precision, channels_last)
            seconds = time.perf_counter() - t0
            record[f"{split}_items_per_second"] = len(labels) / seconds
            probs = None
            if source:  # the source head on the pooled features is the pretrained model's own prediction
                with torch.no_grad():
                    logits = model.head(torch.from_numpy(features).to(device)).float()
                    probs = torch.softmax(logits, dim=1).cpu().numpy()
            cache.write(split, features, labels, probs)
            print(f"extract {domain.name}/{stage.candidate}/{split}: {features.shape} at "
                  f"{len(labels) / seconds:.1f} items/s")
        cache.write_extraction(record)
        # what the features came from: the train and evaluate stages depend on this folder, not on the
        # prepared data (dvc.yaml cannot name the candidate's domain there), so any change to it shows here
        write_json(tmp / "prepared.json", {"sha256": digest_files([paths.prepared_dir(domain.name)], paths.root())})
    return 0


if __name__ == "__main__":
    run_main(main)
