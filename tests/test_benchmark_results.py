"""Committed benchmark results hold no paths of the machine they ran on (relative to the repository instead)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import REPO_ROOT, portable_path

ABSOLUTE = re.compile(r"(^|[\s='\"(])(/[^\s/'\"]|~/|[A-Za-z]:[\\/])")  # /x, ~/x, C:\x at a word's start


def tracked_json() -> list[Path]:
    if shutil.which("git") and (REPO_ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "--", "benchmarks/results"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        return [REPO_ROOT / name for name in out if name.endswith(".json")]
    return sorted((REPO_ROOT / "benchmarks" / "results").rglob("*.json"))


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key, f"{where}/{key} (key)")
            yield from strings(item, f"{where}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}/{i}")
    elif isinstance(value, str):
        yield where, value


def test_there_are_tracked_results() -> None:
    assert any(p.name == "extract.json" for p in tracked_json())


@pytest.mark.parametrize("path", tracked_json(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_absolute_path_in_tracked_results(path: Path) -> None:
    bad = [(where, text) for where, text in strings(json.loads(path.read_text())) if ABSOLUTE.search(text)]
    assert bad == []


def test_portable_path_is_relative_to_the_repository() -> None:
    assert portable_path(REPO_ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "train.tsv") == \
        "../shared/data/glue/SST-2/train.tsv"
    assert portable_path(REPO_ROOT / "benchmarks" / "results") == "benchmarks/results"
