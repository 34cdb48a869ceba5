"""`shared`, `domains` and `pipelines` are generic import names: they must resolve to this repository."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", ["shared", "domains", "pipelines"])
def test_package_resolves_inside_repository(package: str) -> None:
    module = importlib.import_module(package)
    # a namespace package (a folder without __init__.py on sys.path, e.g. tests/shared) has no __file__
    location = module.__file__ or f"namespace package {list(getattr(module, '__path__', []))}"
    expected = REPO_ROOT / package / "__init__.py"
    assert module.__file__ is not None and Path(module.__file__).resolve() == expected, (
        f"'import {package}' resolves to {location}, not to this repository ({REPO_ROOT}); something "
        "earlier on sys.path shadows it (install with `pip install -e .`; put the repository root first "
        "on pytest's path)"
    )
