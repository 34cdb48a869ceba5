"""(d) DVC: a no-op ``dvc repro`` and a head-only re-run, in a temporary copy of a small project.

The copy holds the repository's tracked files (``git ls-files``) with a tiny params file in the spirit of
``tests/test_e2e.py`` (vision only, embedded MNIST, 64 training images at 32 px, regime ``frozen``), as a
fresh git + DVC project; nothing runs in the working checkout. A head-only change is a new
``vision.regimes.frozen.C_grid``: it must re-run only train/evaluate of that regime and compare, not
extraction. Targets (ARCHITECTURE): a no-op repro "in seconds" that runs only the always-run ``check`` stage
(the e2e test allows < 20 s: < 10 s before ``check``, which is one Python process), and a head-only re-run
that skips fetch/prepare/extract.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO_ROOT, write_result
from shared.config import materialize, parse_params
from shared.testing import projects

RUNNING = re.compile(r"Running stage '([^']+)'")
NOOP_TARGET_S = 20.0


def tiny_params() -> dict[str, Any]:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw = {k: v for k, v in raw.items() if k in ("seed", "tracking", "vision")}
    raw.update(domains=["vision"], candidates={"vision/tf_efficientnet_lite0": "vision"}, regimes=["frozen"])
    vision = raw["vision"]
    vision["data"].update(dataset="mnist", max_train_samples=64, max_eval_samples=40)
    vision["model"].update(image_size=32, extract_batch_size=64)
    vision["train"].update(epochs=1, max_steps_per_epoch=2, batch_size=8)
    vision["evaluate"] = {"bootstrap": 20}
    return materialize(parse_params(raw))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("TRANSFERLAB_ROOT", "MLFLOW_TRACKING_URI", "PYTHONPATH"):
        env.pop(key, None)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="b",
               GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    return env


def run_checked(cmd: list[str], cwd: Path, timeout: float = 900) -> str:
    """Run ``cmd`` in ``cwd`` (clean environment); its stdout + stderr, or an error with their tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout + proc.stderr


def _run(cmd: list[str], cwd: Path) -> tuple[float, set[str]]:
    t0 = time.perf_counter()
    output = run_checked(cmd, cwd)
    return time.perf_counter() - t0, set(RUNNING.findall(output))


def make_project(root: Path, params: dict[str, Any]) -> Path:
    """A fresh git + DVC project under ``root`` holding the tracked files and ``params``."""
    return projects.make_project(REPO_ROOT, root / "project", params, _env())


def run() -> dict[str, Any]:
    if shutil.which("dvc") is None or shutil.which("git") is None:
        result: dict[str, Any] = {"skipped": "needs the dvc and git executables"}
        write_result("repro", result)
        return result
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        project = make_project(Path(tmp), tiny_params())
        first_s, first = _run(["dvc", "repro"], project)
        noop_s, noop = _run(["dvc", "repro"], project)
        status_s, _ = _run(["dvc", "status"], project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["vision"]["regimes"]["frozen"]["C_grid"] = [0.5]
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        head_s, head = _run(["dvc", "repro"], project)
    result = {
        "settings": {"project": "temporary copy of the tracked files (git ls-files)", "domains": ["vision"],
                     "regimes": ["frozen"], "dataset": "mnist (embedded), 64 train / 40 eval images, 32 px",
                     "head_only_change": "vision.regimes.frozen.C_grid -> [0.5]"},
        "first_repro_seconds": first_s, "first_repro_stages": sorted(first),
        "noop_repro_seconds": noop_s, "noop_repro_stages": sorted(noop), "dvc_status_seconds": status_s,
        "head_only_repro_seconds": head_s, "head_only_repro_stages": sorted(head),
        "noop_target_seconds": NOOP_TARGET_S,
        "meets_target": noop_s < NOOP_TARGET_S and set(noop) <= {"check"} and not any(s.split("@")[0] in
                                                                           ("fetch", "prepare", "extract")
                                                                           for s in head),
    }
    write_result("repro", result)
    return result
