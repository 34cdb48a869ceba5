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


def features_dir(domain: str) -> Path:
    """Cached frozen features, one sub-folder per backbone (``extract`` out)."""
    return root() / "data" / "features" / domain


def model_dir(domain: str, regime: str) -> Path:
    """Trained weights / head / adapter and the run record (``train`` out)."""
    return root() / "models" / domain / regime


def checkpoint_dir(domain: str, regime: str) -> Path:
    """Resumable training checkpoints; persisted outside DVC outs so a killed stage resumes."""
    return root() / "checkpoints" / domain / regime


def metrics_file(domain: str, regime: str) -> Path:
    """The evaluation metrics JSON (``evaluate`` metrics out)."""
    return root() / "metrics" / domain / f"{regime}.json"


def plots_dir(domain: str, regime: str) -> Path:
    """Evaluation plots (``evaluate`` plots out)."""
    return root() / "plots" / domain / regime


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
