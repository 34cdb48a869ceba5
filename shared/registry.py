"""Domain registry: built-in domains register with ``@register_domain``; external packages through
the ``transferlab.domains`` entry-point group. A broken plugin warns, a duplicate name raises, an
unknown name lists the valid ones."""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from typing import TypeVar

from shared.domain import Domain

ENTRY_POINT_GROUP = "transferlab.domains"
_REGISTRY: dict[str, type[Domain]] = {}
_loaded = False
D = TypeVar("D", bound=type[Domain])


class UnknownDomainError(KeyError):
    """An unknown domain name; the message lists the registered ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_domain(cls: D) -> D:
    """Class decorator: add ``cls`` to the registry under ``cls.name``."""
    for attr in ("name", "modality", "task", "datasets"):
        if not hasattr(cls, attr):
            raise TypeError(f"domain {cls.__qualname__} must define class attribute '{attr}'")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"domain name '{cls.name}' is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def load_entry_points() -> None:
    """Import the built-in domains and every ``transferlab.domains`` entry point (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("domains")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # a broken third-party plugin must not break the others
            warnings.warn(f"transferlab domain plugin '{ep.name}' ({ep.value}) failed to load: {err}",
                          stacklevel=2)
            continue
        if not (isinstance(obj, type) and issubclass(obj, Domain)):
            warnings.warn(f"transferlab domain plugin '{ep.name}' ({ep.value}) is not a Domain subclass",
                          stacklevel=2)
            continue
        register_domain(obj)  # a name already taken by another class raises


def list_domains() -> list[str]:
    """Names of all registered domains, sorted."""
    load_entry_points()
    return sorted(_REGISTRY)


def get_domain(name: str) -> type[Domain]:
    """The domain class registered as ``name``."""
    load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDomainError(f"unknown domain '{name}'; registered domains: {sorted(_REGISTRY)}") from None
