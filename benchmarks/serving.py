"""Serving the winners of a finished ``dvc repro``: ``mlflow models serve`` of each domain's
``models:/transferlab-<domain>@champion`` against the evaluate stage's test probabilities.

    python -m benchmarks.serving --project PATH [--items 256] [--batch 64]

For every domain of the project's ``params.yaml``: the registered ``champion`` and ``cheapest`` versions
(regime, tags), every regime's package and trainable-tensor sizes (the metrics JSON's ``package_bytes``
and ``trainable_bytes``: for LoRA the adapter vs the merged model), then a real server on 127.0.0.1 with
the project's store, the first ``--items`` test items POSTed in batches of ``--batch``: the maximum
absolute difference from ``models/<d>/<champion>/predictions.safetensors``, seconds per request and items
per second, and the answers to two malformed requests (a wrong column, an undecodable image / a number
for a text); then, for the champion and the cheapest, ``transferlab predict``'s throughput on the same items
as files against the bare network forward (:func:`predict_vs_forward`). Writes ``results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, portable_path, write_result


def registered_facts(version: Any) -> dict[str, Any]:
    """Version number, regime, primary metric and its CI of a registered version (from its tags)."""
    metric = version.tags.get("primary_metric")
    return {"version": version.version, "candidate": version.tags.get("candidate"),
            "regime": version.tags.get("regime"), "primary_metric": metric,
            "test": version.tags.get(f"test_{metric}"), "ci95": version.tags.get(f"test_{metric}_ci95")}


def domain_result(project: Path, domain: str, regimes: list[str], items: int, batch: int, log: Path
                  ) -> dict[str, Any]:
    """Registry facts, sizes and the served-vs-evaluated comparison of one domain."""
    from datasets import load_from_disk
    from mlflow import MlflowClient

    from shared.evaluation.predictions import Predictions
    from shared.serving.package import ModelCard, probability_columns, raw_inputs
    from shared.serving.registration import CHAMPION, CHEAPEST, registered_name
    from shared.serving.server import dataframe_split, invoke, model_server

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri)
    name = registered_name(domain)
    aliases = {alias: client.get_model_version_by_alias(name, alias) for alias in (CHAMPION, CHEAPEST)}
    candidate = aliases[CHAMPION].tags["candidate"]
    sizes = {}
    for regime in regimes:
        metrics = json.loads((project / "metrics" / domain / candidate / f"{regime}.json").read_text())
        sizes[regime] = {k: metrics.get(k) for k in ("package_bytes", "trainable_bytes", "trainable_params",
                                                     "total_params")}
    champion = aliases[CHAMPION].tags["regime"]
    card = ModelCard.read(project / "models" / domain / candidate / champion / "package")
    test = load_from_disk(str(project / "data" / "prepared" / domain / "test"))
    inputs = raw_inputs(test)[:items]
    expected = Predictions.load(project / "models" / domain / candidate / champion / "predictions.safetensors"
                                ).test_probs
    columns = probability_columns(card.class_names)
    got: list[list[float]] = []
    seconds: list[float] = []
    with model_server(f"models:/{name}@{CHAMPION}", uri, log) as base:
        for start in range(0, len(inputs), batch):
            t0 = time.perf_counter()
            status, body = invoke(base, dataframe_split(card.input_column, inputs[start:start + batch]))
            seconds.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{name}@{CHAMPION}: HTTP {status}: {body}")
            got.extend([row[c] for c in columns] for row in body["predictions"])
        bad_value: Any = b"not an image" if card.modality == "image" else 42
        malformed = {
            "wrong column": invoke(base, dataframe_split("wrong", inputs[:1])),
            "bad item": invoke(base, dataframe_split(card.input_column, [bad_value])),
        }
        after = invoke(base, dataframe_split(card.input_column, inputs[:1]))[0]
    diff = float(np.abs(np.asarray(got) - expected[:len(got)]).max())
    return {
        "registered": {alias: registered_facts(v) for alias, v in aliases.items()},
        "sizes": sizes, "served": {"regime": champion, "items": len(got), "batch": batch,
                                   "max_abs_diff_vs_evaluate": diff,
                                   "seconds_per_request_median": float(np.median(seconds)),
                                   "items_per_second": len(got) / float(np.sum(seconds))},
        "malformed": {k: {"status": s, "message": str(b.get("message", ""))[:200]} for k, (s, b) in malformed.items()},
        "status_after_malformed": after,
    }


def predict_vs_forward(project: Path, domain: str, regime: str, items: int, batch: int, tmp: Path,
                       rounds: int = 3) -> dict[str, Any]:
    """``transferlab predict``'s path (read the files, the logged pyfunc in batches of ``batch``) against the
    bare network forward of the same package on the same items, already decoded and batched: items per
    second of each and their ratio (the target is >= 0.9). Both in the package's precision, after one
    warm-up batch each, ``rounds`` times alternately (the fastest of each counts); the CLI's own start-up
    (imports, loading the model) is reported apart."""
    import io
    import subprocess
    import sys
    from contextlib import nullcontext

    import mlflow
    import torch
    from datasets import load_from_disk
    from PIL import Image

    from shared.regimes.base import PACKAGE
    from shared.serving.package import NetworkScorer, load_package, raw_inputs
    from shared.serving.predict import predict_items, read_inputs

    folder = project / "models" / domain / regime  # regime: <candidate>/<regime>
    scorer = load_package(folder / PACKAGE)
    if not isinstance(scorer, NetworkScorer):
        return {"regime": regime, "skipped": "not a network (the scikit-learn baseline)"}
    card = scorer.card
    inputs = raw_inputs(load_from_disk(str(project / "data" / "prepared" / domain / "test")))[:items]
    files = tmp / f"{domain}-{regime.replace('/', '--')}"
    files.mkdir()
    if card.modality == "image":  # one file per item, as a user's folder holds them
        for i, data in enumerate(inputs):
            fmt = (Image.open(io.BytesIO(data)).format or "png").lower()  # type: ignore[arg-type]
            (files / f"{i:05d}.{fmt}").write_bytes(data)  # type: ignore[arg-type]
        source = str(files)
    else:
        import pandas as pd

        source = str(files / "items.csv")
        pd.DataFrame({card.input_column: inputs}).to_csv(source, index=False)
    uri = json.loads((project / "metrics" / domain / f"{regime}.json").read_text())["model_uri"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(uri)
    read = read_inputs([source], card.modality, card.input_column)
    predict_items(model, read[:batch], card.input_column, batch_size=batch, progress=False)  # warm-up
    batches = [scorer.prepare(inputs[s:s + batch], s) for s in range(0, len(inputs), batch)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if card.precision == "bf16" else nullcontext()

    def predict_once() -> tuple[float, list[dict[str, Any]]]:
        t0 = time.perf_counter()
        found = read_inputs([source], card.modality, card.input_column)
        scored = predict_items(model, found, card.input_column, batch_size=batch, progress=False)
        return time.perf_counter() - t0, scored

    def forward_once() -> float:
        with torch.inference_mode(), autocast:
            t0 = time.perf_counter()
            for inputs_batch in batches:
                scorer.model(inputs_batch)
            return time.perf_counter() - t0

    with torch.inference_mode(), autocast:
        scorer.model(batches[0])  # warm-up
    predict_times, forward_times = [], []
    for _ in range(rounds):  # alternately, the fastest of each: a busy machine slows both alike
        seconds, rows = predict_once()
        predict_times.append(seconds)
        forward_times.append(forward_once())
    predict_s, forward_s = min(predict_times), min(forward_times)
    failed = [r for r in rows if r.get("error")]
    cli = [sys.executable, "-m", "pipelines.cli", "predict", domain, source, "--model", uri, "--batch-size",
           str(batch), "--no-progress", "--out", str(tmp / f"{domain}-{regime}.csv")]
    t0 = time.perf_counter()
    proc = subprocess.run(cli, cwd=project, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"})
    cli_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cli)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"regime": regime, "items": len(rows), "failed": len(failed), "batch": batch,
            "precision": card.precision, "predict_items_per_second": len(rows) / predict_s,
            "forward_items_per_second": len(inputs) / forward_s, "ratio": forward_s / predict_s,
            "rounds": rounds, "predict_seconds": predict_times, "forward_seconds": forward_times,
            "cli_wall_seconds": cli_s, "cli_startup_seconds": cli_s - predict_s}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on ``--project``."""
    import yaml

    from shared.config import parse_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True, type=Path, help="a project after dvc repro")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    project = args.project.resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    ran = parse_params(params)  # a domain may leave regimes out (regimes.<regime>: false)
    out: dict[str, Any] = {"machine": machine_info(), "project": portable_path(project),
                           "domains": params["domains"], "regimes": params["regimes"], "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for domain in params["domains"]:
            result = domain_result(project, domain, ran.regimes_of(domain), args.items, args.batch,
                                   Path(tmp) / f"{domain}.log")
            runs = dict.fromkeys((v["candidate"], v["regime"]) for v in result["registered"].values())
            result["predict_vs_forward"] = [predict_vs_forward(project, domain, f"{c}/{r}", args.items, args.batch,
                                                               Path(tmp)) for c, r in runs]
            out["results"][domain] = result
            print(domain, json.dumps(result["served"]), json.dumps(result["predict_vs_forward"]))
    print(write_result("serving", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
