"""Packages as MLflow models: logged by ``evaluate@DOMAIN-REGIME`` into the regime's run, the winners
registered by ``compare`` as ``transferlab-<domain>`` with the aliases ``champion`` (the report's winner)
and ``cheapest`` (the least training time on the cost/quality front).

A logged model is a pyfunc from code (:mod:`shared.serving.pyfunc`) with the package folder as its
artifact, a signature (input column ``image``: binary, or ``text``: string; outputs ``prob_<class>`` and
``label``) and one test item as its input example. Its code paths hold transferlab's ``shared`` package, so
a registered version keeps loading after the repository's code moves on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from shared.serving.package import ModelCard, folder_bytes, probability_columns

MODEL_NAME = "model"  # the logged model's name inside its run
REGISTERED_PREFIX = "transferlab-"
CHAMPION, CHEAPEST = "champion", "cheapest"
REQUIREMENTS = ("torch", "timm", "transformers", "safetensors", "scikit-learn", "skops", "pillow", "pandas",
                "numpy", "pydantic", "mlflow")
SHARED = Path(__file__).resolve().parents[1]


def registered_name(domain: str) -> str:
    """The registered model of a domain: ``transferlab-<domain>``."""
    return REGISTERED_PREFIX + domain


def requirements() -> list[str]:
    """The model's pip requirements: the libraries it runs on, pinned to the versions it was logged with
    (explicit, so MLflow does not load the model in a subprocess to infer them)."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def signature(card: ModelCard) -> Any:
    """Input: the card's column (``image`` binary, ``text`` string); output: probabilities and label."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    kind = "binary" if card.modality == "image" else "string"
    outputs: list[ColSpec | TensorSpec] = [ColSpec("double", c) for c in probability_columns(card.class_names)]
    outputs.append(ColSpec("string", "label"))
    return ModelSignature(inputs=Schema([ColSpec(kind, card.input_column)]), outputs=Schema(outputs))


def log_package(package: Path, example: Any, threshold: float | None) -> Any:
    """Log the package in ``package`` as this run's MLflow model; returns MLflow's ``ModelInfo``.

    ``example``: one raw input (an image's bytes or a text), the model's input example.
    """
    import mlflow
    import pandas as pd

    from shared.serving.pyfunc import MODEL_CODE

    card = ModelCard.read(package)
    config = {} if threshold is None else {"threshold": float(threshold)}
    meta = {"domain": card.domain, "regime": card.regime, "kind": card.kind, "class_names": card.class_names,
            "precision": card.precision, "package_bytes": folder_bytes(package), **config}
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts={"package": str(package)},
        model_config=config or None, signature=signature(card),
        input_example=pd.DataFrame({card.input_column: [example]}), pip_requirements=requirements(),
        code_paths=[str(SHARED)], metadata=meta)


def _version_of(client: Any, name: str, source: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=f"transferlab: the winning regimes of domain "
                                                         f"{name.removeprefix(REGISTERED_PREFIX)}")
    except MlflowException as err:
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.source == source:
            return version
    return None


def register(client: Any, row: Mapping[str, Any], tags: Mapping[str, str]) -> Any:
    """The registry version of ``row``'s logged model (``row["model_uri"]``): an existing version with the
    same source, or a new one, tagged with the row's regime, backbone and primary metric with its CI."""
    import mlflow

    name = registered_name(str(row["domain"]))
    version = _version_of(client, name, str(row["model_uri"]))
    if version is None:
        version = mlflow.register_model(str(row["model_uri"]), name)
    ci = (row.get("primary_ci_low"), row.get("primary_ci_high"))
    for key, value in {"regime": row["regime"], "backbone": row["backbone"], "primary_metric": row["primary_metric"],
                       f"test_{row['primary_metric']}": f"{row['primary']:.4f}",
                       f"test_{row['primary_metric']}_ci95": "" if None in ci else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
                       "run_id": row.get("run_id") or "", **tags}.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    return version


def cheapest_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row on the time/quality front with the least training time (None: no row has a cost)."""
    front = [r for r in rows if r.get("pareto_time") and r.get("train_seconds") is not None]
    return min(front, key=lambda r: r["train_seconds"]) if front else None


def register_winners(rows: Sequence[Mapping[str, Any]], tags: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Register each domain's winner as ``transferlab-<domain>@champion`` and its cheapest front regime as
    ``@cheapest``; a re-run with the same models reuses their versions. Returns {domain: {alias: version}}.

    A row without a logged model (``model_uri``) is reported on stderr and not registered.
    """
    from shared.tracking import open_client

    client = open_client()
    out: dict[str, dict[str, str]] = {}
    for domain in dict.fromkeys(r["domain"] for r in rows):
        members = [r for r in rows if r["domain"] == domain]
        chosen = {CHAMPION: next(r for r in members if r.get("winner")), CHEAPEST: cheapest_row(members)}
        for alias, row in chosen.items():
            if row is None:
                continue
            if not row.get("model_uri"):
                print(f"compare: {domain}/{row['regime']} has no logged model; {registered_name(domain)}@{alias} "
                      "is not set", file=sys.stderr)
                continue
            version = register(client, row, tags)
            client.set_registered_model_alias(registered_name(domain), alias, version.version)
            out.setdefault(domain, {})[alias] = str(version.version)
    return out
