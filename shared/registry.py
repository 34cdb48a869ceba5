"""Plugin registries: domains and regimes, built-in or from other packages, found the same way.

Every plugin is a class registered under its ``name``: with a decorator (``@register_domain``,
``@register_regime``) when its module is imported, and found through an entry-point group
(``transferlab.domains``, ``transferlab.regimes``). The built-in plugins are entry points of this
distribution too (``pyproject.toml``), so the library never imports them: ``shared`` does not know
``domains``. A third-party plugin that fails to load, is not a subclass of the base class, reuses a name
already taken, or whose entry-point name differs from its class's ``name`` warns and is skipped, so it
never breaks the others; an unknown name lists the registered ones.

This module imports nothing from the project, so the params models and the base classes can use it
without an import cycle.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from shared.data.domain import Domain
    from shared.regimes.base import Regime

T = TypeVar("T", bound=type)


class UnknownPluginError(KeyError):
    """An unknown plugin name; the message lists the registered ones."""

    def __str__(self) -> str:
        return str(self.args[0])


UnknownDomainError = UnknownPluginError  # the name callers of the domain registry know
UnknownRegimeError = UnknownPluginError


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry(Generic[T]):
    """Classes of one plugin kind by name, filled by a decorator and an entry-point group.

    Args:
        kind: what the plugins are (``domain``, ``regime``), for messages.
        group: the entry-point group read on first use.
        base: dotted path of the base class every plugin must subclass (a path, not the class: this module
            must not import the project).
        required: class attributes every plugin must define.
    """

    def __init__(self, kind: str, group: str, base: str, required: tuple[str, ...]) -> None:
        self.kind, self.group, self.base, self.required = kind, group, base, required
        self._classes: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under ``cls.name``; a name taken by another class raises."""
        for attr in self.required:
            if not hasattr(cls, attr):
                raise TypeError(f"{self.kind} {cls.__qualname__} must define class attribute '{attr}'")
        name: str = cls.name  # type: ignore[attr-defined]
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"{self.kind} name '{name}' is already registered by {_qualname(existing)}")
        self._classes[name] = cls
        return cls

    def _is_plugin(self, obj: Any) -> bool:
        return isinstance(obj, type) and any(_qualname(c) == self.base for c in obj.__mro__)

    def _load_one(self, ep: EntryPoint) -> None:
        where = f"transferlab {self.kind} plugin '{ep.name}' ({ep.value}"
        where += f", package {ep.dist.name})" if ep.dist is not None else ")"
        try:
            obj = ep.load()
        except Exception as err:  # a broken third-party plugin must not break the others
            warnings.warn(f"{where} failed to load and is skipped: {err}", stacklevel=3)
            return
        if not self._is_plugin(obj):
            warnings.warn(f"{where} is not a subclass of {self.base} and is skipped", stacklevel=3)
            return
        if getattr(obj, "name", None) != ep.name:
            warnings.warn(f"{where}: error, the entry point is named '{ep.name}' but the class's name is "
                          f"{getattr(obj, 'name', None)!r}; it is skipped", stacklevel=3)
            return
        existing = self._classes.get(ep.name)
        if existing is not None and existing is not obj:
            warnings.warn(f"{where} reuses the name '{ep.name}' of {_qualname(existing)}; it is skipped",
                          stacklevel=3)
            return
        self.register(obj)

    def load(self) -> None:
        """Read the entry-point group (once). Built-in plugins come first, so a clash skips the outsider."""
        if self._loaded:
            return
        self._loaded = True
        eps = sorted(entry_points(group=self.group), key=lambda ep: (ep.dist is None or ep.dist.name != "transferlab",
                                                                     ep.name))
        for ep in eps:
            self._load_one(ep)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.load()
        return sorted(self._classes)

    def classes(self) -> list[T]:
        """Registered classes, by name."""
        self.load()
        return [self._classes[n] for n in sorted(self._classes)]

    def get(self, name: str) -> T:
        """The class registered as ``name``; an unknown name lists the registered ones."""
        self.load()
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownPluginError(f"unknown {self.kind} '{name}'; registered {self.kind}s: "
                                     f"{sorted(self._classes)}") from None

    def snapshot(self) -> tuple[dict[str, T], bool]:
        """The registry's state, for tests that register throwaway plugins (see :meth:`restore`)."""
        return dict(self._classes), self._loaded

    def restore(self, state: tuple[dict[str, T], bool]) -> None:
        """Put back a :meth:`snapshot`."""
        self._classes, self._loaded = dict(state[0]), state[1]


DOMAIN_GROUP = "transferlab.domains"
REGIME_GROUP = "transferlab.regimes"
ENTRY_POINT_GROUP = DOMAIN_GROUP
DOMAINS: Registry[type[Domain]] = Registry("domain", DOMAIN_GROUP, "shared.data.domain.Domain",
                                           ("name", "modality", "task", "datasets"))
REGIMES: Registry[type[Regime]] = Registry("regime", REGIME_GROUP, "shared.regimes.base.Regime",
                                           ("name", "description", "Params"))

register_domain: Callable[[Any], Any] = DOMAINS.register
get_domain = DOMAINS.get
list_domains = DOMAINS.names
register_regime: Callable[[Any], Any] = REGIMES.register
get_regime = REGIMES.get
list_regimes = REGIMES.names


_SECTION_CLASSES: dict[tuple[str, str], type[Domain]] = {}


def section_format(raw: Any) -> str | None:
    """``data.format`` of a raw params section, if it names one (an own-data section)."""
    data = raw.get("data") if isinstance(raw, dict) else getattr(raw, "data", None)
    value = data.get("format") if isinstance(data, dict) else getattr(data, "format", None)
    return value if isinstance(value, str) else None


def domain_class(name: str, data_format: str | None = None) -> type[Domain]:
    """The class of the params section ``name``: the domain registered under that name, else (when the
    section's ``data`` names a ``format``) the registered domain that reads that format (its ``formats``),
    renamed ``name`` by its ``named`` class method. The same class object is returned for the same pair."""
    if data_format is None or name in DOMAINS.names():
        return DOMAINS.get(name)
    key = (name, data_format)
    if key not in _SECTION_CLASSES:
        readers = [cls for cls in DOMAINS.classes() if data_format in getattr(cls, "formats", ())]
        if not readers:
            formats = sorted({f for cls in DOMAINS.classes() for f in getattr(cls, "formats", ())})
            raise UnknownPluginError(f"section '{name}': no registered domain reads data.format "
                                     f"{data_format!r}; formats: {formats}")
        _SECTION_CLASSES[key] = readers[0].named(name)  # type: ignore[attr-defined]
    return _SECTION_CLASSES[key]


def load_entry_points() -> None:
    """Load every plugin of both groups (once)."""
    DOMAINS.load()
    REGIMES.load()
