"""What a user sees on opening the MLflow UI of a finished ``dvc repro``: headless-Chromium screenshots.

    python -m benchmarks.ui_screenshot --project PATH [--port 5077] [--width 1600 --height 1000]

Starts ``transferlab ui`` in the project (its own store, 127.0.0.1), waits until the server answers, then
takes a screenshot of each domain experiment's runs table and of the page ``transferlab ui`` opens on (the
newest comparison), with ``chromium-headless-shell`` (Debian package ``chromium-headless-shell``) or
``chromium``. Writes ``results/mlflow-ui/<page>.png`` and ``results/mlflow-ui.json`` (the pages, the
experiments' kind tags, the machine); describe what the pictures show where they are used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info, portable_path, write_result

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")


def browser() -> str:
    """The first headless Chromium on PATH."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(f"none of {', '.join(BROWSERS)} on PATH (apt install chromium-headless-shell)")


def wait_for(url: str, timeout: float = 120.0) -> None:
    """Until ``url`` answers 200 (the MLflow server's ``/health``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def screenshot(url: str, out: Path, width: int, height: int) -> None:
    """A PNG of ``url`` after the page's scripts had 20 s of (virtual) time to render."""
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", "--virtual-time-budget=20000", f"--screenshot={out}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots of ``--project``'s UI."""
    from mlflow import MlflowClient

    from pipelines.cli import MODEL_TRAINING
    from shared.config import load_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True, type=Path, help="a project after dvc repro")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    project = args.project.resolve()
    out_dir = RESULTS_DIR / "mlflow-ui"
    out_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(args.port)], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # the UI's server processes go with it (killpg)
    pages: dict[str, Any] = {}
    try:
        assert server.stdout is not None
        start_page = ""
        for line in server.stdout:  # the command prints the page it opens on before the server starts
            if line.startswith("the comparison: "):
                start_page = line.split(": ", 1)[1].strip()
                break
        wait_for(f"{base}/health")
        targets = {"start-page": start_page}
        for domain in load_params(project / "params.yaml").domains:
            experiment = client.get_experiment_by_name(domain)
            if experiment is not None:
                targets[f"{domain}-runs"] = f"{base}/#/experiments/{experiment.experiment_id}/runs{MODEL_TRAINING}"
                pages[f"{domain}-runs"] = {"experiment_tags": dict(experiment.tags)}
        for name, url in targets.items():
            path = out_dir / f"{name}.png"
            screenshot(url, path, args.width, args.height)
            pages.setdefault(name, {}).update(url=url.replace(f"{base}/", ""), png=portable_path(path))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(write_result("mlflow-ui", {"machine": machine_info(), "project": portable_path(project),
                                     "browser": Path(browser()).name, "pages": pages}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
