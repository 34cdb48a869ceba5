"""The MLflow run context: tags, flattened params, finite metrics and an honest end status.

Every run ends FINISHED (success), FAILED (an exception escaped; tag ``error``) or KILLED (SIGTERM or
SIGINT; or, found later, a RUNNING run whose process is gone). Runs record the owning process as tags
``pid``, ``hostname`` and ``process_start`` so :func:`reconcile_stale_runs` can tell a dead (or reused)
pid from a live one.

A SQLite store is created (schema migration) and its experiments are created under an exclusive lock on
``<db>.lock`` beside the database file, so processes racing on a fresh store all succeed.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

import mlflow  # noqa: E402  (the variable above must be set before MLflow reads it)
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH  # noqa: E402

from shared import paths  # noqa: E402
from shared.files.processes import pid_alive, process_start  # noqa: E402
from shared.files.signals import SignalSection, signal_exit  # noqa: E402
from shared.paths import sqlite_file, tracking_uri  # noqa: E402  (re-exported: where the store is)

if TYPE_CHECKING:
    from datasets import DatasetDict

PID_TAG, HOST_TAG, START_TAG = "pid", "hostname", "process_start"
# The MLflow UI opens an experiment on what its kind says: training runs, not the GenAI traces view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


_OPENED: set[str] = set()  # tracking URIs whose store this process has created or checked


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` beside a SQLite store; no lock for other stores.

    The lock dies with its process (``flock``), so a SIGKILL never leaves it held.
    """
    path = sqlite_file(uri)
    if path is None or not path.parent.is_dir():  # no file to guard (MLflow reports a missing folder)
        yield
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_client() -> MlflowClient:
    """An ``MlflowClient`` on :func:`tracking_uri` (also made MLflow's current URI), its store ready.

    The first call in a process opens the store under :func:`_store_lock`: whoever comes first creates
    and migrates a fresh SQLite file, the others wait and then find it complete.
    """
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri in _OPENED:
        return MlflowClient(uri)
    with _store_lock(uri):
        client = MlflowClient(uri)  # builds (and on a fresh file migrates) the store; MLflow caches it
    _OPENED.add(uri)
    return client


def _experiment_id(client: MlflowClient, name: str) -> str:
    """Get or create the experiment ``name``; a concurrent creator is tolerated."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if not EXPERIMENT_KIND.items() <= exp.tags.items():  # a store written before the kind was set
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    with _store_lock(tracking_uri()):
        exp = client.get_experiment_by_name(name)  # created while we waited for the lock?
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name, tags=EXPERIMENT_KIND)
        except MlflowException:  # a server store: another client created it in between
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def init_store(experiments: list[str]) -> None:
    """Create the store (schema migration) and the experiments; safe to call from racing processes."""
    client = open_client()
    for name in experiments:
        _experiment_id(client, name)


# --- process identity -------------------------------------------------------------------------


def _owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), START_TAG: process_start(pid) or ""}


def _is_stale(tags: Mapping[str, str]) -> bool:
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False  # another host's run, or not one of ours: cannot judge
    pid = int(tags[PID_TAG])
    if not pid_alive(pid):
        return True
    recorded = tags.get(START_TAG)
    return bool(recorded) and process_start(pid) not in (None, recorded)


def reconcile_stale_runs() -> list[str]:
    """Mark RUNNING runs of this host whose process is dead (or whose pid was reused) as KILLED.

    Returns the ids of the runs it fixed.
    """
    client = open_client()
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    fixed: list[str] = []
    if not exp_ids:
        return fixed
    token = None
    while True:
        page = client.search_runs(
            exp_ids, "attributes.status = 'RUNNING'", ViewType.ALL, max_results=1000, page_token=token
        )
        for run in page:
            if _is_stale(run.data.tags):
                run_id = run.info.run_id
                client.set_tag(run_id, "end_reason", f"stale: process {run.data.tags[PID_TAG]} is gone")
                client.set_terminated(run_id, status="KILLED")
                fixed.append(run_id)
        token = page.token
        if not token:
            return fixed


def reconcile_store() -> list[str]:
    """:func:`reconcile_stale_runs` where a local store exists; a no-op (opening nothing) otherwise.

    For a SQLite URI the database file must exist; other stores (a tracking server) are left to the
    stages that open runs, since reaching them is not cheap. Returns the ids of the runs it fixed.
    """
    path = sqlite_file(tracking_uri())
    if path is None or not path.is_file():
        return []
    return reconcile_stale_runs()


# --- params and metrics ------------------------------------------------------------------------


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to ``{"a.b.c": "value"}`` with string values (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite metrics to the active run; raise ``ValueError`` naming the key of a NaN/inf value.

    Nothing is logged if any value is not finite (MLflow would store inf as 1.797e308).
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_metrics needs an active run: call it inside tracked_run()")
    values = {key: float(value) for key, value in metrics.items()}
    bad = [key for key, value in values.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"non-finite metric(s) {', '.join(f'{k}={values[k]}' for k in bad)}: not logged")
    mlflow.log_metrics(values, step=step)


def _column_type(feature: Any) -> str:
    """The MLflow column type of a ``datasets`` feature: images travel as bytes, class labels as integers,
    values as their own type."""
    kind, dtype = getattr(feature, "_type", ""), str(getattr(feature, "dtype", ""))
    if kind == "Image":
        return "binary"
    if kind == "Value" and dtype.startswith("float"):
        return "double"
    if kind == "Value" and dtype == "bool":
        return "boolean"
    return "long" if kind == "ClassLabel" or dtype.startswith(("int", "uint")) else "string"


def log_splits(data: DatasetDict, name: str, folder: Path) -> None:
    """Log each split of ``data`` (saved in ``folder``) as an MLflow dataset input of the active run: named
    ``<name>-<split>``, the split as its context, the split's content fingerprint as its digest and its
    columns as the schema, so the runs table's Dataset column and the lineage show what a run saw."""
    from mlflow.data.dataset import Dataset
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    datasets: list[Dataset | None] = []
    contexts: list[str | None] = []
    for split, ds in data.items():
        location = folder / split
        uri = str(location.relative_to(paths.root()) if location.is_relative_to(paths.root()) else location)
        with warnings.catch_warnings():  # MLflow registers its local source twice ("" and "file") and says so
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(uri)
        schema = Schema([ColSpec(_column_type(feature), column) for column, feature in ds.features.items()])
        datasets.append(MetaDataset(source, name=f"{name}-{split}", digest=ds._fingerprint[:16],  # type: ignore[abstract]
                                    schema=schema))
        contexts.append(split)
    mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))


# --- the run context ---------------------------------------------------------------------------


class _Interrupted(BaseException):
    """Raised by our signal handler inside the ``with`` body; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _SignalGuard(SignalSection):
    """Turn SIGTERM/SIGINT into ``_Interrupted`` while the run is open; defer them while it starts or ends."""

    def act(self, signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    def outermost(self) -> bool:
        """True unless an enclosing ``tracked_run`` installed the handlers we replaced."""
        return not any(isinstance(getattr(p, "__self__", None), _SignalGuard) for p in self.previous.values())

    def check(self) -> None:
        """Raise ``_Interrupted`` for a signal that came while deferred (and forget it)."""
        signum, self.pending = self.pending, None
        if signum is not None:
            raise _Interrupted(signum)

    def stop_deferring(self) -> None:
        """Handle signals as they come again, starting with one that came while deferred."""
        self.deferring = False
        self.check()


_END_TAGS = ("end_reason", "error")  # why an earlier attempt of a resumed run ended; stale once it finishes


def _end_run(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> None:
    if status == "FINISHED":
        for key in set(_END_TAGS) & client.get_run(run_id).data.tags.keys():
            client.delete_tag(run_id, key)
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:MAX_TAG_VAL_LENGTH])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
    else:  # the body left another run on the stack: still end ours honestly
        client.set_terminated(run_id, status=status)


def _ending_for(exc: BaseException) -> tuple[str, dict[str, str]]:
    """The end status and explanatory tags for an exception leaving the run."""
    if isinstance(exc, _Interrupted):
        return "KILLED", {"end_reason": signal.Signals(exc.signum).name}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"end_reason": "KeyboardInterrupt"}
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "FINISHED", {}
    return "FAILED", {"error": f"{type(exc).__name__}: {exc}"}


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str,
    *,
    tags: dict[str, str],
    params: dict | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Open (or resume, with ``run_id``) an MLflow run that always ends with an honest status.

    FINISHED on success, FAILED on an exception (tag ``error`` = type and message), KILLED on
    SIGTERM/SIGINT, after which the default behaviour follows (exit ``128 + signum``, or
    ``KeyboardInterrupt``). Stale RUNNING runs of dead processes are marked KILLED first. A signal while
    the run starts is deferred: before MLflow opens the run it opens none (a resumed run keeps its
    status), after that the run ends KILLED, so no run is left RUNNING. A resumed run is tagged with
    its new owner before it turns RUNNING, and loses the ``end_reason``/``error`` tags of an earlier
    attempt when it finishes. Signal handlers are installed only from the main thread and restored on
    exit. ``params`` are flattened with dotted keys; a resumed run must not be given different values
    for params it already has.
    """
    client = open_client()
    reconcile_stale_runs()
    exp_id = _experiment_id(client, experiment)
    guard = _SignalGuard()
    guard.install()
    guard.deferring = True  # until our run is open and owned: a signal now is handled just after
    outermost = guard.outermost()
    current: str | None = None  # our run while it still needs an end status
    try:
        owner = _owner_tags()
        if run_id is not None:
            _claim(client, run_id, exp_id, experiment, owner)
        guard.check()  # signalled already: open no run only to end it
        active = mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else exp_id,
            run_name=run_name,
            nested=nested,
            parent_run_id=parent_run_id,
            tags={**tags, **owner},
        )
        current = active.info.run_id
        guard.stop_deferring()  # a signal that came while MLflow opened the run ends it KILLED (below)
        try:
            if params:
                mlflow.log_params(flatten_params(params))
            yield active
        except BaseException as exc:
            guard.deferring = True  # a signal now is deferred until the status is written
            _end_run(client, current, *_ending_for(exc))
            current = None
            raise
        guard.deferring = True
        _end_run(client, current, "FINISHED", {})
        current = None
    except _Interrupted as exc:
        guard.deferring = True
        if current is not None:  # the signal came while the run started, or between the body and its end
            _end_run(client, current, *_ending_for(exc))
        if outermost:
            guard.restore()
            raise signal_exit(exc.signum) from None
        raise  # an enclosing tracked_run marks its own run KILLED, then exits
    finally:
        guard.restore()
        if guard.pending is not None:
            if outermost:
                raise signal_exit(guard.pending)
            signal.raise_signal(guard.pending)  # hand it to the enclosing tracked_run's handler


def _claim(client: MlflowClient, run_id: str, exp_id: str, experiment: str, owner: dict[str, str]) -> None:
    """Tag the run to resume with its new owner (one write) before MLflow turns it RUNNING again.

    So a run is never RUNNING under a previous, dead owner, which :func:`reconcile_stale_runs` would
    mark KILLED (``end_reason=stale``) while we are using it.
    """
    existing = client.get_run(run_id)
    if existing.info.experiment_id != exp_id:
        raise ValueError(f"run {run_id} belongs to experiment {existing.info.experiment_id}, not {experiment!r}")
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in owner.items()])
