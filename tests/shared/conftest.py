"""Fixtures of the library's tests: a migrated MLflow store to copy (a migration costs seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.testing.serving import fresh_store


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store; tests copy it (see :func:`private_store`)."""
    folder = tmp_path_factory.mktemp("template")
    fresh_store(folder)  # the Default experiment's artifacts go beside it, never into the checkout
    return folder / "mlflow.db"


@pytest.fixture
def private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> str:
    """A copy of the migrated store at ``tmp_path/mlflow.db``, the project root and working directory
    ``tmp_path``; its URI."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # experiments created now keep their artifacts in tmp_path/mlruns
    return uri
