"""shared.registry: unknown names list the valid ones, duplicates raise, broken plugins only warn."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

import shared.registry as registry
from shared.data.domain import Domain
from shared.registry import ENTRY_POINT_GROUP, UnknownDomainError, get_domain, list_domains, register_domain

BUILT_IN = ["dermatology", "ehr", "imagefolder", "nlp", "table", "vision", "xray"]  # + the own-data readers
PLUGIN_SOURCE = '''
from typing import ClassVar

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain


class ExternalParams(DomainParams):
    data: DataParams = DataParams(dataset="birds")
    model: ModelParams = ModelParams(backbone="resnet18", pretrained=False)


class External(Domain):
    """A domain delivered by a third-party package."""

    name: ClassVar[str] = "{name}"
    modality: ClassVar[str] = "image"
    task: ClassVar[str] = "multiclass"
    datasets: ClassVar[tuple[str, ...]] = ("birds",)
    Params = ExternalParams
'''


@pytest.fixture()
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The registry module with a private copy of the domain registry's state (restored after the test):
    the built-ins registered, the entry points not yet read."""
    registry.load_entry_points()  # built-ins in the copy
    state = registry.DOMAINS.snapshot()
    registry.DOMAINS.restore((state[0], False))
    yield registry
    registry.DOMAINS.restore(state)


def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, name: str) -> None:
    """Write an importable plugin module ``module`` whose ``External`` domain is called ``name``."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN_SOURCE.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)


def use_entry_points(monkeypatch: pytest.MonkeyPatch, *specs: tuple[str, str]) -> None:
    eps = [EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in specs]

    def fake(group: str) -> list[EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return eps

    monkeypatch.setattr(registry, "entry_points", fake)


def test_built_in_domains_are_registered() -> None:
    assert set(BUILT_IN) <= set(list_domains())
    assert get_domain("vision").__module__ == "domains.vision"


def test_unknown_domain_lists_valid_names() -> None:
    with pytest.raises(UnknownDomainError) as info:
        get_domain("audio")
    assert str(info.value) == f"unknown domain 'audio'; registered domains: {list_domains()}"
    assert isinstance(info.value, KeyError)  # callers may catch KeyError


def test_duplicate_name_raises(isolated: ModuleType) -> None:
    class Impostor(Domain):
        name: ClassVar[str] = "vision"
        modality: ClassVar[str] = "image"
        task: ClassVar[str] = "binary"
        datasets: ClassVar[tuple[str, ...]] = ("x",)

    with pytest.raises(ValueError, match="domain name 'vision' is already registered by domains.vision.Vision"):
        register_domain(Impostor)
    assert get_domain("vision").__module__ == "domains.vision"


def test_registering_the_same_class_twice_is_a_no_op(isolated: ModuleType) -> None:
    vision = get_domain("vision")
    assert register_domain(vision) is vision


def test_missing_class_attribute_raises(isolated: ModuleType) -> None:
    class NoTask(Domain):
        name: ClassVar[str] = "notask"
        modality: ClassVar[str] = "text"
        datasets: ClassVar[tuple[str, ...]] = ("x",)

    with pytest.raises(TypeError, match="must define class attribute 'task'"):
        register_domain(NoTask)
    assert "notask" not in isolated.DOMAINS.snapshot()[0]


def test_external_entry_point_registers(isolated: ModuleType, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_module(tmp_path, monkeypatch, "tl_plugin_ok", "birds")
    use_entry_points(monkeypatch, ("birds", "tl_plugin_ok:External"))
    assert list_domains() == sorted([*BUILT_IN, "birds"])
    cls = get_domain("birds")
    assert cls.__module__ == "tl_plugin_ok" and cls.Params().data.dataset == "birds"


def test_broken_entry_point_warns_and_the_others_load(isolated: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_module(tmp_path, monkeypatch, "tl_plugin_good", "birds")
    use_entry_points(monkeypatch, ("broken", "tl_no_such_module_xyz:Domain"), ("birds", "tl_plugin_good:External"))
    with pytest.warns(UserWarning, match=r"transferlab domain plugin 'broken' \(tl_no_such_module_xyz:Domain\) "
                                         r"failed to load and is skipped: No module named 'tl_no_such_module_xyz'"):
        names = list_domains()
    assert names == sorted([*BUILT_IN, "birds"])


def test_entry_points_are_loaded_once(isolated: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(registry, "entry_points", lambda group: calls.append(group) or [])
    list_domains()
    get_domain("nlp")
    assert calls == [ENTRY_POINT_GROUP]


def test_external_entry_point_with_a_taken_name_is_skipped_with_a_warning(
        isolated: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party plugin reusing a built-in name warns, naming its entry point, and every domain works."""
    plugin_module(tmp_path, monkeypatch, "tl_plugin_dup", "vision")
    use_entry_points(monkeypatch, ("vision", "tl_plugin_dup:External"))
    with pytest.warns(UserWarning, match=r"plugin 'vision' \(tl_plugin_dup:External\) reuses the name 'vision' "
                                         r"of domains.vision.Vision; it is skipped"):
        names = list_domains()
    assert names == BUILT_IN and get_domain("vision").__module__ == "domains.vision"


def test_entry_point_named_unlike_its_class_is_an_error_naming_both(
        isolated: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_module(tmp_path, monkeypatch, "tl_plugin_misnamed", "birds")
    use_entry_points(monkeypatch, ("fish", "tl_plugin_misnamed:External"))
    with pytest.warns(UserWarning, match="error, the entry point is named 'fish' but the class's name is 'birds'"):
        names = list_domains()
    assert "fish" not in names and "birds" not in names


def test_the_library_never_imports_the_built_in_domains() -> None:
    """``shared`` reaches the built-in domains only through the entry-point group (ARCHITECTURE)."""
    from shared.files.imports import CODE_ROOT, import_closure

    shared_modules = [".".join(p.relative_to(CODE_ROOT).with_suffix("").parts).removesuffix(".__init__")
                      for p in (CODE_ROOT / "shared").rglob("*.py")]
    reached = import_closure(shared_modules)
    assert not [p for p in reached if p.is_relative_to(CODE_ROOT / "domains")]
