"""Serving the winners of a finished ``dvc repro``: ``mlflow models serve`` of each domain's
``models:/transferlab-<domain>@champion`` against the evaluate stage's test probabilities.

    python -m benchmarks.serving --project PATH [--items 256] [--batch 64]

For every domain of the project's ``params.yaml``: the registered ``champion`` and ``cheapest`` versions
(regime, tags), every regime's package and trainable-tensor sizes (the metrics JSON's ``package_bytes``
and ``trainable_bytes``: for LoRA the adapter vs the merged model), then a real server on 127.0.0.1 with
the project's store, the first ``--items`` test items POSTed in batches of ``--batch``: the maximum
absolute difference from ``models/<d>/<champion>/predictions.safetensors``, seconds per request and items
per second, and the answers to two malformed requests (a wrong column, an undecodable image / a number
for a text). Writes ``results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, portable_path, write_result


def registered_facts(version: Any) -> dict[str, Any]:
    """Version number, regime, primary metric and its CI of a registered version (from its tags)."""
    metric = version.tags.get("primary_metric")
    return {"version": version.version, "regime": version.tags.get("regime"), "primary_metric": metric,
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
    sizes = {}
    for regime in regimes:
        metrics = json.loads((project / "metrics" / domain / f"{regime}.json").read_text())
        sizes[regime] = {k: metrics.get(k) for k in ("package_bytes", "trainable_bytes", "trainable_params",
                                                     "total_params")}
    champion = aliases[CHAMPION].tags["regime"]
    card = ModelCard.read(project / "models" / domain / champion / "package")
    test = load_from_disk(str(project / "data" / "prepared" / domain / "test"))
    inputs = raw_inputs(test)[:items]
    expected = Predictions.load(project / "models" / domain / champion / "predictions.safetensors").test_probs
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on ``--project``."""
    import yaml

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True, type=Path, help="a project after dvc repro")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    project = args.project.resolve()
    params = yaml.safe_load((project / "params.yaml").read_text())
    out: dict[str, Any] = {"machine": machine_info(), "project": portable_path(project),
                           "domains": params["domains"], "regimes": params["regimes"], "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for domain in params["domains"]:
            out["results"][domain] = domain_result(project, domain, params["regimes"], args.items, args.batch,
                                                   Path(tmp) / f"{domain}.log")
            print(domain, json.dumps(out["results"][domain]["served"]))
    print(write_result("serving", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
