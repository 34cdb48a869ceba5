"""Every on-disk location a stage reads or writes; mirrors ``dvc.yaml`` (one place for paths)."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The project root: ``TRANSFERLAB_ROOT`` or the current directory (where DVC runs stages)."""
    return Path(os.environ.get("TRANSFERLAB_ROOT", ".")).resolve()


def raw_dir(domain: str) -> Path:
    """Fetched raw files of a domain (``fetch`` out)."""
    return root() / "data" / "raw" / domain


def source_link(domain: str) -> Path:
    """A link to what the domain's stages read besides params and code (its plugin code, or the user's
    files); a dependency of every stage of the domain."""
    return root() / "data" / "sources" / domain


def prepared_dir(domain: str) -> Path:
    """The prepared ``DatasetDict`` (``prepare`` out)."""
    return root() / "data" / "prepared" / domain


def features_dir(domain: str, candidate: str) -> Path:
    """Cached frozen features of one candidate backbone (``extract@<domain>/<candidate>`` out)."""
    return root() / "data" / "features" / domain / candidate


def candidate_params_file(domain: str, candidate: str) -> Path:
    """The effective params of one (domain, candidate), written by ``check``; the per-candidate stages
    track their keys (dvc.yaml cannot name the candidate's domain section in params.yaml)."""
    return root() / "data" / "candidates" / domain / f"{candidate}.yaml"


def candidate_source_link(domain: str, candidate: str) -> Path:
    """A link to the domain's source (as :func:`source_link`), under the candidate's name for its stages."""
    return root() / "data" / "candidates" / domain / f"{candidate}.source"


def finalists_dir(domain: str) -> Path:
    """``screen@<domain>``'s choice, one :func:`finalist_file` per candidate (its out)."""
    return root() / "data" / "screening" / domain


def finalist_file(domain: str, candidate: str) -> Path:
    """Whether ``screen@<domain>`` picked ``candidate`` to train (a dependency of its train stages)."""
    return finalists_dir(domain) / f"{candidate}.json"


def screening_file(domain: str) -> Path:
    """``screen@<domain>``'s scores of every candidate, with the seconds each took."""
    return root() / "reports" / "screening" / f"{domain}.json"


def model_dir(domain: str, candidate: str, regime: str) -> Path:
    """Trained weights / head / adapter and the run record (``train`` out)."""
    return root() / "models" / domain / candidate / regime


def checkpoint_dir(domain: str, candidate: str, regime: str) -> Path:
    """Resumable training checkpoints; persisted outside DVC outs so a killed stage resumes."""
    return root() / "checkpoints" / domain / candidate / regime


def metrics_file(domain: str, candidate: str, regime: str) -> Path:
    """The evaluation metrics JSON (``evaluate`` metrics out)."""
    return root() / "metrics" / domain / candidate / f"{regime}.json"


def plots_dir(domain: str, candidate: str, regime: str) -> Path:
    """Evaluation plots (``evaluate`` plots out)."""
    return root() / "plots" / domain / candidate / regime


def audit_file(domain: str) -> Path:
    """The data audit written by ``prepare``."""
    return root() / "reports" / "audit" / f"{domain}.json"


def reports_dir() -> Path:
    """Where ``compare`` writes its files (``comparison.*``) and ``prepare`` its audits (``audit/``)."""
    return root() / "reports"


def params_file() -> Path:
    """``params.yaml`` at the root."""
    return root() / "params.yaml"


def tracking_uri() -> str:
    """The MLflow store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI; None for other stores and in-memory databases."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None
