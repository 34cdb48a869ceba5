"""Stage ``extract@DOMAIN/CANDIDATE``: pooled features of one frozen candidate backbone for every split,
cached as safetensors in ``data/features/<domain>/<candidate>`` (the frozen probe, lp_ft and the screening
read them). A pretrained image backbone keeps its source head (timm's ImageNet classifier), whose class
probabilities are stored beside the features for the screening's LEEP and NCE."""

from __future__ import annotations

import time

import torch
from datasets import load_from_disk

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths
from shared.data.domain import SPLITS
from shared.data.features import FeatureCache, extract_features
from shared.data.loaders import make_dataset, make_loader
from shared.files.atomic import write_json
from shared.files.imports import digest_files
from shared.models import feature_backbone, load_tokenizer, source_classes


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
    with staged_output(paths.features_dir(domain.name, stage.candidate)) as tmp:
        cache = FeatureCache(tmp, model_params)
        for split in SPLITS:
            dataset = make_dataset(dd[split], model, tokenizer=tokenizer, max_length=model_params.max_length,
                                   sort_by_length=True)
            loader = make_loader(dataset, model_params.extract_batch_size, tokenizer=tokenizer)
            t0 = time.perf_counter()
            features, labels = extract_features(model, loader, device)
            seconds = time.perf_counter() - t0
            probs = None
            if source:  # the source head on the pooled features is the pretrained model's own prediction
                with torch.no_grad():
                    logits = model.head(torch.from_numpy(features).to(device)).float()
                    probs = torch.softmax(logits, dim=1).cpu().numpy()
            cache.write(split, features, labels, probs)
            print(f"extract {domain.name}/{stage.candidate}/{split}: {features.shape} at "
                  f"{len(labels) / seconds:.1f} items/s")
        # what the features came from: the train and evaluate stages depend on this folder, not on the
        # prepared data (dvc.yaml cannot name the candidate's domain there), so any change to it shows here
        write_json(tmp / "prepared.json", {"sha256": digest_files([paths.prepared_dir(domain.name)], paths.root())})
    return 0


if __name__ == "__main__":
    run_main(main)
