"""The Model Registry: ``compare`` registers each domain's winner (by the report's rule) as
``transferlab-<domain>`` with the alias ``champion``, and the regime with the least training time on the
time/quality front with the alias ``cheapest``. Versions are tagged with regime, backbone, the primary
metric with its 95% CI, git commit and DVC experiment; a re-run with the same logged models reuses their
versions."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

REGISTERED_PREFIX = "transferlab-"
CHAMPION, CHEAPEST = "champion", "cheapest"


def registered_name(domain: str) -> str:
    """The registered model of a domain: ``transferlab-<domain>``."""
    return REGISTERED_PREFIX + domain


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
    same source, or a new one, tagged with the row's regime, backbone (the model's label, and ``candidate``:
    the candidate backbone it trained on) and primary metric with its CI."""
    import mlflow

    name = registered_name(str(row["domain"]))
    version = _version_of(client, name, str(row["model_uri"]))
    if version is None:
        version = mlflow.register_model(str(row["model_uri"]), name)
    ci = (row.get("primary_ci_low"), row.get("primary_ci_high"))
    for key, value in {"regime": row["regime"], "backbone": row["backbone"], "candidate": row.get("candidate", ""),
                       "primary_metric": row["primary_metric"],
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
