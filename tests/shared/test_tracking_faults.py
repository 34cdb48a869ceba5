"""Faults around the tracking store (RELIABILITY 11, 14, 16): a fresh store raced by several processes,
runs SIGKILLed before a command that opens no run, and signals while a run starts."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from shared import tracking
from shared.tracking import init_store, reconcile_stale_runs, tracked_run

REPO = Path(__file__).resolve().parents[2]
EXP = "unit"
TAGS = {"domain": "toy"}

# Waits for the go file, then opens a run on the (fresh) store and logs n points: a start-line race.
RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shared.tracking import log_metrics, tracked_run
    go, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    with tracked_run("unit", name, tags={"worker": name}) as run:
        print(run.info.run_id, flush=True)
        for step in range(n):
            log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    """
)

# Opens a run, reports its id and sleeps until the test SIGKILLs it.
SLEEPER = textwrap.dedent(
    """
    import time
    from shared.tracking import tracked_run
    with tracked_run("unit", "sleeper", tags={}) as run:
        print(run.info.run_id, flush=True)
        time.sleep(120)
    """
)

# Sends itself SIGTERM once, at one point of tracked_run's start (argv[1]); resumes run argv[2] if given.
STARTER = textwrap.dedent(
    """
    import os, signal, sys
    import mlflow
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from shared import tracking
    point, resume = sys.argv[1], sys.argv[2] or None
    fired = []

    def term():
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    def signal_before(fn):
        def patched(*args, **kwargs):
            term()
            return fn(*args, **kwargs)
        return patched

    def signal_after(fn):
        def patched(*args, **kwargs):
            out = fn(*args, **kwargs)
            term()
            return out
        return patched

    if point == "before_owner":  # the owner tags are computed, not yet written
        tracking._owner_tags = signal_after(tracking._owner_tags)
    elif point == "before_start":  # owned; MLflow about to (re)open the run
        mlflow.start_run = signal_before(mlflow.start_run)
    elif point == "in_start":  # inside start_run: the run is RUNNING (created or reopened), not yet active
        MlflowClient.create_run = signal_after(MlflowClient.create_run)
        SqlAlchemyStore.update_run_info = signal_after(SqlAlchemyStore.update_run_info)
    elif point == "after_start":  # start_run returned; tracked_run has not seen its result
        mlflow.start_run = signal_after(mlflow.start_run)
    with tracking.tracked_run("unit", "starter", tags={}, run_id=resume):
        print("body ran", flush=True)
    """
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_store: str) -> Iterator[MlflowClient]:
    """A private store ``tmp_path/mlflow.db`` (the project root is ``tmp_path``) with the experiment."""
    uri = private_store
    init_store([EXP])
    yield MlflowClient(uri)
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _python(script: str, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    err = stderr.open("w") if stderr else None
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=err,
                            text=True, env=env, cwd=Path.cwd())


def _runs(client: MlflowClient) -> list[mlflow.entities.Run]:
    exp_id = client.get_experiment_by_name(EXP).experiment_id
    return list(client.search_runs([exp_id], run_view_type=ViewType.ALL))


def _sigkilled_run(client: MlflowClient) -> str:
    """The id of a run whose process was SIGKILLed: RUNNING, and nothing has reconciled it yet."""
    proc = _python(SLEEPER)
    run_id = proc.stdout.readline().strip()
    proc.kill()
    proc.wait(60)
    assert client.get_run(run_id).info.status == "RUNNING"
    return run_id


# --- 1. a fresh store raced by several processes -----------------------------------------------


def test_processes_racing_on_a_fresh_store_all_finish_with_every_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "fresh.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)  # the store's artifacts (./mlruns) and the workers' working directory
    go = tmp_path / "go"
    logs = [tmp_path / f"w{i}.err" for i in range(4)]
    workers = [_python(RACER, str(go), f"w{i}", "200", stderr=log) for i, log in enumerate(logs)]
    assert [w.stdout.readline().strip() for w in workers] == ["ready"] * 4
    assert not db.exists()  # nobody has touched the store yet: they all start on a fresh file
    go.touch()
    run_ids = [w.stdout.readline().strip() for w in workers]
    codes = [w.wait(120) for w in workers]
    assert codes == [0] * 4, "\n".join(log.read_text()[-2000:] for log in logs)
    client = MlflowClient(f"sqlite:///{db}")
    assert [client.get_run(r).info.status for r in run_ids] == ["FINISHED"] * 4
    histories = [client.get_metric_history(r, "loss") for r in run_ids]
    assert [sorted(m.step for m in h) for h in histories] == [list(range(200))] * 4
    assert len(client.search_experiments(filter_string=f"name = '{EXP}'")) == 1


# --- 3. a SIGKILLed run is reconciled by commands that open no run -----------------------------


def test_reconcile_store_marks_a_sigkilled_run_killed(store: MlflowClient) -> None:
    run_id = _sigkilled_run(store)
    assert tracking.reconcile_store() == [run_id]
    got = store.get_run(run_id)
    assert got.info.status == "KILLED" and got.data.tags["end_reason"].startswith("stale")
    assert tracking.reconcile_store() == []


def test_reconcile_store_without_a_store_opens_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert tracking.reconcile_store() == []
    assert list(tmp_path.iterdir()) == []  # neither a database nor a lock file was created
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a server is not cheap to reach
    assert tracking.reconcile_store() == []


def test_stages_look_into_a_local_store_without_mlflow(store: MlflowClient, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a RUNNING run (or a store it cannot read) makes a stage open MLflow to reconcile."""
    from pipelines.common import _may_have_running_runs

    with tracked_run(EXP, "done", tags={}):
        pass
    assert not _may_have_running_runs()  # finished runs only
    _sigkilled_run(store)
    assert _may_have_running_runs()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{garbage}")
    assert _may_have_running_runs()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert not _may_have_running_runs()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert _may_have_running_runs()  # (reconcile_store then leaves a server alone)


def test_every_stage_reconciles_in_parse_stage(store: MlflowClient) -> None:
    from pipelines.common import parse_stage

    run_id = _sigkilled_run(store)
    parse_stage(["--domain", "vision", "--params", str(REPO / "params.yaml")], "a stage")
    assert store.get_run(run_id).info.status == "KILLED"


def test_compare_reconciles_even_when_its_inputs_are_missing(store: MlflowClient) -> None:
    from pipelines import compare

    run_id = _sigkilled_run(store)
    with pytest.raises(SystemExit, match="metrics missing"):  # tmp_path has no metrics/
        compare.main(["--params", str(REPO / "params.yaml")])
    assert store.get_run(run_id).info.status == "KILLED"


def test_ui_reconciles_before_it_launches(store: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import cli

    run_id = _sigkilled_run(store)
    seen: list[str] = []

    def fake_call(cmd: list[str], **_: object) -> int:
        seen.append(store.get_run(run_id).info.status)
        return 0

    monkeypatch.setattr(cli.subprocess, "call", fake_call)
    assert cli.cmd_ui(argparse.Namespace(host="127.0.0.1", port=5999)) == 0
    assert seen == ["KILLED"]


# --- 4. a signal while a run starts ------------------------------------------------------------

# (point, resume a FINISHED run?) -> status of the run afterwards; None: no run was opened.
START_CASES = {
    ("before_owner", False): None,
    ("before_start", False): "KILLED",
    ("in_start", False): "KILLED",
    ("after_start", False): "KILLED",
    ("before_owner", True): "FINISHED",
    ("before_start", True): "KILLED",
    ("in_start", True): "KILLED",
    ("after_start", True): "KILLED",
}


@pytest.mark.parametrize(("point", "resume"), list(START_CASES), ids=[f"{p}-{'resume' if r else 'new'}"
                                                                       for p, r in START_CASES])
def test_sigterm_while_a_run_starts_leaves_an_honest_status(store: MlflowClient, point: str, resume: bool) -> None:
    resumed = None
    if resume:
        with tracked_run(EXP, "train", tags=TAGS) as train:
            pass
        resumed = train.info.run_id
    proc = _python(STARTER, point, resumed or "")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "body ran" not in out
    runs = _runs(store)
    statuses = {run.info.status for run in runs}
    assert "RUNNING" not in statuses
    expected = START_CASES[point, resume]
    assert [run.info.status for run in runs] == ([expected] if expected else [])
    for run in runs:
        assert run.data.tags.get("end_reason") == ("SIGTERM" if expected == "KILLED" else None)
    assert reconcile_stale_runs() == []  # nothing left for a later command to call stale


def test_resumed_run_that_finishes_drops_the_reasons_of_earlier_attempts(store: MlflowClient) -> None:
    with pytest.raises(KeyboardInterrupt), tracked_run(EXP, "train", tags=TAGS) as first:
        signal.raise_signal(signal.SIGINT)
    run_id = first.info.run_id
    assert store.get_run(run_id).data.tags["end_reason"] == "SIGINT"
    with pytest.raises(RuntimeError), tracked_run(EXP, "train", tags=TAGS, run_id=run_id):
        raise RuntimeError("evaluate crashed")
    assert store.get_run(run_id).info.status == "FAILED"
    with tracked_run(EXP, "train", tags=TAGS, run_id=run_id):
        pass
    got = store.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert "end_reason" not in got.data.tags and "error" not in got.data.tags


def test_resumed_run_is_owned_before_it_turns_running(store: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with tracked_run(EXP, "train", tags=TAGS) as train:
        pass
    run_id = train.info.run_id
    store.set_tag(run_id, tracking.PID_TAG, "999999999")  # a previous owner that is gone
    start_run = mlflow.start_run
    seen: list[str] = []

    def spy(*args: object, **kwargs: object) -> mlflow.ActiveRun:
        seen.append(store.get_run(run_id).data.tags[tracking.PID_TAG])
        return start_run(*args, **kwargs)

    monkeypatch.setattr(mlflow, "start_run", spy)
    with tracked_run(EXP, "train", tags={"stage": "evaluate"}, run_id=run_id):
        assert reconcile_stale_runs() == []
    assert seen == [str(os.getpid())]
