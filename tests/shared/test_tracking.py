"""Every MLflow run ends with an honest status; parallel runs lose nothing (RELIABILITY 2, 9, 11)."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from shared import tracking
from shared.tracking import flatten_params, init_store, log_metrics, reconcile_stale_runs, tracked_run

REPO = Path(__file__).resolve().parents[2]
EXP = "unit"
TAGS = {"domain": "toy", "regime": "frozen"}

# A worker that opens a run, reports its id and then sleeps (killed by the test) or logs metrics.
WORKER = textwrap.dedent(
    """
    import sys, time
    from shared.tracking import log_metrics, tracked_run
    mode, name = sys.argv[1], sys.argv[2]
    with tracked_run("unit", name, tags={"worker": name}) as run:
        print(run.info.run_id, flush=True)
        if mode == "sleep":
            time.sleep(120)
        else:
            for step in range(int(mode)):
                log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    """
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_store: str) -> Iterator[MlflowClient]:
    """A private tracking store in ``tmp_path`` with the experiment created; never the repo's db."""
    uri = private_store
    monkeypatch.chdir(tmp_path)
    init_store([EXP])
    yield MlflowClient(uri)
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _worker(mode: str, name: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode, name], stdout=subprocess.PIPE, text=True, env=env, cwd=Path.cwd()
    )


def _status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_import_disables_pickle_deserialization() -> None:
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_tracking_uri_defaults_to_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri() == "sqlite:///elsewhere.db"


def test_flatten_params_uses_dotted_string_values() -> None:
    flat = flatten_params({"lr": 0.1, "model": {"name": "vit", "head": {"dropout": 0.2}}, "tags": [1, 2]})
    assert flat == {"lr": "0.1", "model.name": "vit", "model.head.dropout": "0.2", "tags": "[1, 2]"}


def test_run_ends_finished_with_tags_and_params(store: MlflowClient) -> None:
    with tracked_run(EXP, "ok", tags=TAGS, params={"opt": {"lr": 0.01}}) as run:
        log_metrics({"acc": 0.5}, step=0)
    got = store.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"opt.lr": "0.01"}
    assert got.data.tags["domain"] == "toy" and got.data.tags["pid"] == str(os.getpid())
    assert got.data.metrics == {"acc": 0.5}


def test_experiments_open_on_training_runs(store: MlflowClient) -> None:
    """The UI opens an experiment by its kind: ours are model development, also in a store made before."""
    assert store.get_experiment_by_name(EXP).tags["mlflow.experimentKind"] == "custom_model_development"
    old = store.create_experiment("older")  # as an earlier version created it: no kind
    init_store(["older"])
    assert store.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_splits_are_logged_as_dataset_inputs(store: MlflowClient, tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "score": Value("float32"), "label": ClassLabel(names=["a", "b"])})
    data = DatasetDict({split: Dataset.from_dict({"text": [split, "x"], "score": [0.5, 1.0], "label": [0, 1]},
                                                 features=features) for split in ("train", "test")})
    with tracked_run(EXP, "data", tags=TAGS) as run:
        tracking.log_splits(data, "toy", tmp_path / "data" / "prepared" / "toy")
    inputs = store.get_run(run.info.run_id).inputs.dataset_inputs
    got = {i.dataset.name: (i.tags[0].value, i.dataset.digest, i.dataset.source) for i in inputs}
    assert got == {f"toy-{s}": (s, data[s]._fingerprint[:16], f'{{"uri": "data/prepared/toy/{s}"}}')
                   for s in ("train", "test")}  # the split as context; a path relative to the project
    schema = inputs[0].dataset.schema
    assert all(f'"{t}", "name": "{c}"' in schema for t, c in [("string", "text"), ("double", "score"),
                                                               ("long", "label")]), schema


def test_exception_marks_failed_with_truncated_error_tag(store: MlflowClient) -> None:
    with pytest.raises(RuntimeError), tracked_run(EXP, "boom", tags=TAGS) as run:
        raise RuntimeError("disk on fire " * 2000)
    got = store.get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"].startswith("RuntimeError: disk on fire")
    assert len(got.data.tags["error"]) == MAX_TAG_VAL_LENGTH


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_raises_and_logs_nothing(store: MlflowClient, bad: float) -> None:
    with pytest.raises(ValueError, match="val_loss"), tracked_run(EXP, "nan", tags=TAGS) as run:
        log_metrics({"acc": 0.9, "val_loss": bad}, step=3)
    got = store.get_run(run.info.run_id)
    assert got.data.metrics == {}
    assert got.info.status == "FAILED" and "val_loss" in got.data.tags["error"]


def test_sigint_marks_killed_raises_keyboardinterrupt_and_restores_handlers(store: MlflowClient) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), tracked_run(EXP, "ctrl-c", tags=TAGS) as run:
        signal.raise_signal(signal.SIGINT)
    assert _status(store, run.info.run_id) == "KILLED"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_in_nested_run_kills_both_and_exits_143(store: MlflowClient) -> None:
    with pytest.raises(SystemExit) as exit_info, tracked_run(EXP, "parent", tags=TAGS) as parent:
        with tracked_run(EXP, "child", tags=TAGS, nested=True) as child:
            signal.raise_signal(signal.SIGTERM)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert _status(store, parent.info.run_id) == _status(store, child.info.run_id) == "KILLED"
    assert store.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_works_from_a_non_main_thread(store: MlflowClient) -> None:
    result: dict[str, object] = {}

    def body() -> None:
        try:
            with tracked_run(EXP, "thread", tags=TAGS) as run:
                log_metrics({"x": 1.0})
            result["run_id"] = run.info.run_id
        except BaseException as exc:  # surfaced to the main thread below
            result["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(60)
    assert "error" not in result, result.get("error")
    assert _status(store, str(result["run_id"])) == "FINISHED"


def test_evaluate_stage_resumes_the_train_run(store: MlflowClient) -> None:
    with tracked_run(EXP, "train", tags=TAGS, params={"lr": 0.1}) as train:
        log_metrics({"train_loss": 0.3}, step=1)
    run_id = train.info.run_id
    with tracked_run(EXP, "train", tags={"stage": "evaluate"}, run_id=run_id) as evaluate:
        log_metrics({"test_acc": 0.8})
    assert evaluate.info.run_id == run_id
    got = store.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics == {"train_loss": 0.3, "test_acc": 0.8}
    assert got.data.params == {"lr": "0.1"} and got.data.tags["stage"] == "evaluate"


def test_reconcile_judges_pid_liveness_and_reuse(store: MlflowClient) -> None:
    exp_id = store.get_experiment_by_name(EXP).experiment_id
    host = socket.gethostname()
    me = tracking._owner_tags()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    cases = {
        "dead": {"pid": dead.stdout.decode().strip(), "hostname": host},
        "reused": {**me, "process_start": "another-boot:1"},
        "alive": me,
        "other_host": {"pid": dead.stdout.decode().strip(), "hostname": host + "-elsewhere"},
    }
    ids = {name: store.create_run(exp_id, tags=tags).info.run_id for name, tags in cases.items()}
    fixed = reconcile_stale_runs()
    assert sorted(fixed) == sorted([ids["dead"], ids["reused"]])
    statuses = {name: _status(store, run_id) for name, run_id in ids.items()}
    assert statuses == {"dead": "KILLED", "reused": "KILLED", "alive": "RUNNING", "other_host": "RUNNING"}


def test_sigterm_in_subprocess_marks_killed(store: MlflowClient) -> None:
    proc = _worker("sleep", "term")
    run_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    got = store.get_run(run_id)
    assert got.info.status == "KILLED" and got.data.tags["end_reason"] == "SIGTERM"


def test_sigkilled_run_stays_running_until_next_tracked_run(store: MlflowClient) -> None:
    proc = _worker("sleep", "kill9")
    run_id = proc.stdout.readline().strip()
    proc.kill()
    proc.wait(60)
    assert _status(store, run_id) == "RUNNING"  # nothing can run on SIGKILL
    with tracked_run(EXP, "next", tags=TAGS):
        assert _status(store, run_id) == "KILLED"


def test_parallel_workers_on_a_fresh_store_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the store's artifacts (./mlruns) and the workers' working directory
    init_store([EXP])
    workers = [_worker("200", f"w{i}") for i in range(4)]
    run_ids = [w.stdout.readline().strip() for w in workers]
    assert [w.wait(120) for w in workers] == [0] * 4
    client = MlflowClient(uri)
    assert [_status(client, r) for r in run_ids] == ["FINISHED"] * 4
    histories = [client.get_metric_history(r, "loss") for r in run_ids]
    assert [sorted(m.step for m in h) for h in histories] == [list(range(200))] * 4
