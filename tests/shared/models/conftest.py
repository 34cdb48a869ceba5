"""Backbone tests run offline: no test here may reach a hub."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` set for every test of this folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
