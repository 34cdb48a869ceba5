"""A stopped stage leaves no half-written outputs (RELIABILITY 1, 18): ``staged_output`` removes its staging
folder on SIGTERM/SIGINT, and the next ``staged_output`` on the same destination removes what SIGKILL left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import common
from pipelines.common import clear_stale_staging, staged_output

REPO = Path(__file__).resolve().parents[2]

# A stage-like worker: stages part of an output, reports the staging folder, then waits to be stopped.
# With "tracked" the staging sits inside or around an MLflow run, whose signal handlers must compose.
WORKER = textwrap.dedent(
    """
    import sys, time
    from contextlib import ExitStack
    from pathlib import Path
    from pipelines.common import staged_output
    dest, nesting = Path(sys.argv[1]), sys.argv[2]
    with ExitStack() as stack:
        if nesting != "plain":
            from shared.tracking import tracked_run
        if nesting == "run-outside":
            run = stack.enter_context(tracked_run("unit", "w", tags={}))
        tmp = stack.enter_context(staged_output(dest))
        if nesting == "run-inside":
            run = stack.enter_context(tracked_run("unit", "w", tags={}))
        (tmp / "features.bin").write_bytes(b"x" * 65536)
        print(tmp, run.info.run_id if nesting != "plain" else "", flush=True)
        time.sleep(120)
    """
)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture()
def dest(tmp_path: Path) -> Path:
    """An existing output folder ``data/features/xray`` holding ``old.txt``."""
    folder = tmp_path / "data" / "features" / "xray"
    folder.mkdir(parents=True)
    (folder / "old.txt").write_text("previous output")
    return folder


def start(dest: Path, nesting: str = "plain", env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str],
                                                                                         Path, str]:
    """The worker, once it has staged its partial output: (process, staging folder, run id)."""
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(dest), nesting], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line:
        proc.wait(timeout=60)
        pytest.fail(f"worker exited {proc.returncode} before staging")
    staging = Path(line[0])
    assert staging.parent == dest.parent
    assert staging.name.startswith(f".{dest.name}.staging-{proc.pid}@{socket.gethostname()}-")
    assert (staging / "features.bin").is_file()
    return proc, staging, line[1] if len(line) > 1 else ""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_signal_removes_the_staging_folder_at_once(dest: Path, sig: signal.Signals, code: int) -> None:
    proc, staging, _ = start(dest)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code  # SIGINT: KeyboardInterrupt, which Python ends with SIGINT
    assert not staging.exists()
    assert leftovers(dest.parent) == []
    assert (dest / "old.txt").read_text() == "previous output"  # the previous output is untouched


def test_sigkill_leftover_is_removed_by_the_next_staged_output(dest: Path) -> None:
    proc, staging, _ = start(dest)
    proc.kill()
    proc.wait(timeout=60)
    assert staging.exists()  # nothing runs on SIGKILL
    with staged_output(dest) as tmp:
        assert leftovers(dest.parent) == [tmp.name]  # cleared when the next stage starts writing
        (tmp / "new.txt").write_text("new output")
    assert leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


@pytest.fixture()
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_only_dead_or_unowned_leftovers_of_the_same_output_are_removed(tmp_path: Path, dead_pid: int,
                                                                      live_pid: int) -> None:
    dest, host = tmp_path / "full", socket.gethostname()
    names = [f".full.staging-{dead_pid}@{host}-ab12cd", f".full.old-{dead_pid}@{host}-zz", ".full.staging-k3j4_x1q",
             f".full.staging-{live_pid}@{host}-ab12cd", f".full.staging-{os.getpid()}@{host}-mine",
             f".full.staging-{dead_pid}@another-host.lan-q1", f".fully.staging-{dead_pid}@{host}-x",
             f".xray.staging-{dead_pid}@{host}-x", "full"]
    for name in names:
        (tmp_path / name).mkdir()
    removed = clear_stale_staging(dest)
    assert sorted(p.name for p in removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


@pytest.mark.parametrize("nesting", ["run-inside", "run-outside"])
def test_sigterm_composes_with_tracked_run(dest: Path, tmp_path: Path, nesting: str) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, staging, run_id = start(dest, nesting, env={"MLFLOW_TRACKING_URI": uri, "TRANSFERLAB_ROOT": str(tmp_path)})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert not staging.exists() and leftovers(dest.parent) == []
    run = MlflowClient(uri).get_run(run_id)
    assert (run.info.status, run.data.tags.get("end_reason")) == ("KILLED", "SIGTERM")


def test_signal_during_the_final_renames_waits_until_they_are_done(dest: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``dest`` is briefly absent between the two renames: a SIGTERM there acts once both are done."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    real_replace = os.replace

    def replace_then_signal(src: Path, dst: Path) -> None:
        real_replace(src, dst)
        signal.raise_signal(signal.SIGTERM)  # the first time: dest has just been moved away

    previous = signal.signal(signal.SIGTERM, stop)  # stands in for the default action, which would end pytest
    try:
        with pytest.raises(SystemExit) as info, monkeypatch.context() as patch:
            patch.setattr(common.os, "replace", replace_then_signal)
            with staged_output(dest) as tmp:
                (tmp / "new.txt").write_text("new output")
        assert info.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]  # dest is never left missing
    assert leftovers(dest.parent) == []
