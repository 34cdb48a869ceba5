"""Throwaway git + DVC projects for end-to-end tests and benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def make_project(repo_root: Path, dest: Path, params: dict[str, Any], env: dict[str, str]) -> Path:
    """A throwaway git + DVC project for end-to-end tests and benchmarks: the files git tracks in
    ``repo_root`` (without ``.dvc/`` and ``dvc.lock``) copied into ``dest``, ``params`` as its
    ``params.yaml``, committed. Raises if its stages would import another checkout than the copy."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=repo_root, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in names:
        src = repo_root / name
        if not name or name.startswith(".dvc/") or name == "dvc.lock" or not src.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=True)
    probe = "import pipelines, shared; print(shared.__file__, pipelines.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], cwd=dest, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    if not all(Path(p).resolve().is_relative_to(dest.resolve()) for p in where):
        raise RuntimeError(f"stages in {dest} would import another checkout: {where}")
    return dest
