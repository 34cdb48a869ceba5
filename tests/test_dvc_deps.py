"""Dependencies that cannot drift: every stage of ``dvc.yaml`` (and ``sweep/dvc.yaml``) depends on every
project file it imports -- followed statically through all imports -- and on the plugins it loads (every
registered domain; the regime plugins where the stage runs a regime or validates every section)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared.files.imports import import_closure
from shared.registry import get_domain, get_regime, list_domains, list_regimes

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [REPO_ROOT / "dvc.yaml", REPO_ROOT / "sweep" / "dvc.yaml"]
REGIME_STAGES = {"train", "evaluate", "sweep", "check"}  # run a regime, or validate every regime section


def stages(dvc_file: Path) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (its module, its deps as written), for plain and foreach/matrix stages."""
    out = {}
    for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
        body = stage.get("do", stage)
        module = re.search(r"python -m ([\w.]+)", body["cmd"])
        assert module, f"{dvc_file.name}: stage {name} does not run a python module: {body['cmd']}"
        out[name] = (module.group(1), [str(d) for d in body.get("deps", [])])
    return out


def missing_deps(module: str, deps: list[str], stage: str, root: Path) -> list[str]:
    """The project files the stage imports or loads that none of ``deps`` covers (a folder covers its files)."""
    roots = [module, *(get_domain(d).__module__ for d in list_domains())]
    if stage in REGIME_STAGES:
        roots += [get_regime(r).__module__ for r in list_regimes()]
    needed = {p.relative_to(root).as_posix() for p in import_closure(roots, root) if p.is_relative_to(root)}
    covered = [d.rstrip("/") for d in deps if "${" not in d]
    return sorted(f for f in needed if not any(f == d or f.startswith(d + "/") for d in covered))


@pytest.mark.parametrize("dvc_file", PIPELINES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_stage_depends_on_the_code_it_runs(dvc_file: Path) -> None:
    problems = {name: missing for name, (module, deps) in stages(dvc_file).items()
                if (missing := missing_deps(module, deps, name, REPO_ROOT))}
    assert not problems, f"{dvc_file.name}: stages miss dependencies on code they run: {problems}"


def test_the_check_catches_a_missing_dependency() -> None:
    """The checker itself: dropping one imported file from the train stage's deps is reported."""
    module, deps = stages(REPO_ROOT / "dvc.yaml")["train"]
    assert "shared/regimes" in deps
    trimmed = [d for d in deps if d != "shared/regimes"]
    assert "shared/regimes/baseline.py" in missing_deps(module, trimmed, "train", REPO_ROOT)
