"""What every stage does first: parse ``--domain/--regime``, validate params before any side effect,
and write its outputs through a staging folder so a killed stage never leaves half-written outputs."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from shared import paths
from shared.config import DomainParams, ProjectParams, load_params
from shared.data.domain import Domain
from shared.files.atomic import DiskFullError
from shared.files.processes import pid_alive
from shared.files.signals import SignalSection, signal_exit
from shared.regimes.base import Regime
from shared.registry import get_regime

# Errors that mean bad input or a full disk, not a bug: one line and exit code 2 (``--debug``: traceback).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, FileNotFoundError, DiskFullError)
DEBUG_ENV = "TRANSFERLAB_DEBUG"


def debug_requested(flag: bool = False) -> bool:
    """True if ``--debug`` was given (``flag``) or ``TRANSFERLAB_DEBUG=1`` is set."""
    return flag or os.environ.get(DEBUG_ENV, "") == "1"


def guarded(func: Callable[[], int], prog: str, debug: bool = False) -> int:
    """``func()``'s exit code; an :data:`EXPECTED_ERRORS` error prints ``<prog>: error: <message>`` to
    stderr and gives 2 (with ``debug``, its traceback is printed first)."""
    try:
        return int(func())
    except EXPECTED_ERRORS as err:
        if debug:
            traceback.print_exc()
        message = err.args[0] if type(err) is KeyError and err.args else err  # str(KeyError) adds quotes
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


@dataclass
class Stage:
    """A validated stage invocation."""

    params: ProjectParams
    domain: Domain[Any]  # its params' model is the candidate's (:meth:`ProjectParams.candidate_params`)
    regime: str | None
    candidate: str = ""  # the backbone (candidate name) of a per-candidate stage; "" for domain stages

    @property
    def dp(self) -> DomainParams:
        """The domain's validated params section."""
        return self.domain.params

    @property
    def regime_plugin(self) -> Regime[Any]:
        """The regime of this invocation, configured by the domain's params."""
        if self.regime is None:
            raise ValueError("this stage runs no regime")
        return get_regime(self.regime).for_domain(self.dp)

    def tags(self, stage: str) -> dict[str, str]:
        """MLflow tags every run of this (domain, regime) carries."""
        name = (f"{stage}@{self.domain.name}" + (f"/{self.candidate}" if self.candidate else "")
                + (f"-{self.regime}" if self.regime else ""))
        return {
            "domain": self.domain.name, "regime": self.regime or "", "backbone": self.candidate or self.dp.model.name,
            "dataset": self.dp.data.dataset, "git_commit": git_commit(), "dvc_stage": name,
            "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
        }


LEFT_OUT = "left_out.json"  # what a left-out (domain, candidate, regime)'s train stage writes in its model folder


def is_finalist(domain: str, candidate: str) -> bool:
    """Whether ``screen@<domain>`` picked ``candidate`` to train (:func:`shared.paths.finalist_file`)."""
    import json

    file = paths.finalist_file(domain, candidate)
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; run the screen@{domain} stage first")
    return bool(json.loads(file.read_text())["finalist"])


def left_out(stage: Stage) -> str | None:
    """Why ``stage``'s (domain, candidate, regime) does not run, or None. DVC's ``matrix`` crosses every
    candidate with every regime and cannot leave combinations out; a domain's section can
    (``regimes.<regime>: false``), and screening trains only its finalists. The stages of such a combination
    then only write the outputs they declare, saying why (nothing trains, no MLflow run)."""
    name = stage.domain.name
    if stage.regime is not None and not stage.dp.runs(stage.regime):
        return f"{name}.regimes.{stage.regime} is false: {name} does not run {stage.regime}"
    several = len(stage.params.candidates_of(name)) > 1  # one candidate: nothing to screen, it trains
    if stage.candidate and several and not is_finalist(name, stage.candidate):
        return (f"{stage.candidate} is not a finalist of screen@{name} ({name}.screen.finalists, ranked by "
                f"{name}.screen.select_by; see {paths.screening_file(name).relative_to(paths.root())})")
    return None


def git_commit() -> str:
    """HEAD's commit hash, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=paths.root(),
                             check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_stage(argv: list[str] | None, description: str, *, with_regime: bool = False,
                with_candidate: bool = False) -> Stage:
    """Parse arguments (``--domain``, and ``--candidate`` / ``--regime`` where the stage has them) and validate
    ``params.yaml``; errors exit before anything is written. ``--candidate`` may also be given as
    ``--domain <domain>/<candidate>``, the top-level ``candidates`` spelling dvc.yaml passes; without either,
    a domain with one candidate runs that one.

    Then reconcile the tracking store (:func:`reconcile_tracking`).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--domain", required=True)
    if with_candidate:
        parser.add_argument("--candidate", default=None, help="the backbone (default: after the '/' of --domain)")
    if with_regime:
        parser.add_argument("--regime", required=True)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    args = parser.parse_args(argv)
    params = load_params(args.params or paths.params_file())
    domain, _, candidate = args.domain.partition("/") if with_candidate else (args.domain, "", "")
    candidate = getattr(args, "candidate", None) or candidate
    cls = params.domain_class(domain)  # an unknown domain is named first
    if with_candidate:
        if not candidate and len(params.candidates_of(domain)) == 1:  # the domain's only backbone
            candidate = params.candidates_of(domain)[0]
        if not candidate:
            parser.error(f"give --candidate, or --domain <domain>/<candidate>: {domain} has the candidates "
                         f"{params.candidates_of(domain)}")
        if candidate not in params.candidates_of(domain):
            raise ValueError(f"{domain}/{candidate} is not in candidates {list(params.candidates)}")
    regime = getattr(args, "regime", None)
    if regime is not None:
        get_regime(regime)
    section = params.candidate_params(domain, candidate) if candidate else params.domain(domain)
    stage = Stage(params=params, domain=cls(section), regime=regime, candidate=candidate)
    reconcile_tracking()
    return stage


def _may_have_running_runs() -> bool:
    """False only when the local SQLite store is missing or holds no RUNNING run (one read-only query of
    MLflow's ``runs`` table, no MLflow import); True for other stores and whenever the query fails."""
    import sqlite3

    db = paths.sqlite_file(paths.tracking_uri())
    if db is None:
        return True
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            return bool(conn.execute("SELECT 1 FROM runs WHERE status = 'RUNNING' LIMIT 1").fetchone())
    except sqlite3.Error:
        return True


def reconcile_tracking() -> None:
    """Mark the runs of dead processes KILLED if a local tracking store exists (opening none otherwise).

    Every stage, ``compare`` and ``ui`` call it first, so a run SIGKILLed earlier does not stay RUNNING
    until some later stage happens to open a run. Housekeeping only: a store it cannot read is reported
    on stderr and the caller goes on.
    """
    if not _may_have_running_runs():
        return  # spares the stages that open no run MLflow's import and store check (seconds each)
    from shared.tracking import reconcile_store

    try:
        fixed = reconcile_store()
    except Exception as err:  # never fail a stage over another run's status
        print(f"warning: could not reconcile stale MLflow runs: {type(err).__name__}: {err}", file=sys.stderr)
        return
    if fixed:
        print(f"marked {len(fixed)} stale RUNNING MLflow run(s) of dead processes KILLED", file=sys.stderr)


def run_main(main: Callable[[list[str]], int]) -> NoReturn:
    """A stage's ``if __name__ == "__main__"``: run ``main(sys.argv[1:])`` and exit with its code.

    The errors ``transferlab`` reports as one line (see :func:`guarded`) are reported the
    same way here, exit code 2; ``--debug`` (removed from the arguments) or ``TRANSFERLAB_DEBUG=1`` shows
    the full traceback instead.
    """
    argv = sys.argv[1:]
    args = [arg for arg in argv if arg != "--debug"]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # python -m pipelines.train: its name
    prog = spec.name if spec is not None else Path(sys.argv[0]).name
    raise SystemExit(guarded(lambda: main(args), prog=prog, debug=debug_requested("--debug" in argv)))


# --- staging folders ----------------------------------------------------------------------------

_KINDS = ("staging", "old")


def _owner() -> str:
    """``<pid>@<host>``: who owns a staging folder (see :func:`clear_stale_staging`)."""
    return f"{os.getpid()}@{socket.gethostname()}"


def clear_stale_staging(dest: Path) -> list[Path]:
    """Remove ``.<name>.staging-*`` and ``.<name>.old-*`` beside ``dest`` that no live process owns.

    :func:`staged_output` names them ``.<name>.<kind>-<pid>@<host>-<random>``; one of this host whose pid
    is dead, or whose name holds no pid (older code), is a leftover of a killed stage. Another host's
    (a shared file system) is left alone: its pid means nothing here. Returns the removed paths.
    """
    removed: list[Path] = []
    if not dest.parent.is_dir():
        return removed
    prefixes = tuple(f".{dest.name}.{kind}-" for kind in _KINDS)
    for entry in sorted(dest.parent.iterdir()):
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        if prefix is None:
            continue
        owner = re.fullmatch(r"(\d+)@(.+)-[^-]*", entry.name[len(prefix) :])
        if owner and (owner.group(2) != socket.gethostname() or pid_alive(int(owner.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        print(f"removed {entry}, left by a stopped stage", file=sys.stderr)
        removed.append(entry)
    return removed


class _StageSignals(SignalSection):
    """While outputs are staged, SIGTERM/SIGINT raise in the main thread, so staging folders are removed.

    A handler found installed (an enclosing ``tracked_run``'s, or Python's ``KeyboardInterrupt``) is called
    instead, so the two compose; with none, Python's default outcome is raised. While ``deferring`` (the
    final renames, the clean-up) a signal waits until :meth:`restore`, which acts on it once the old
    handlers are back.
    """

    def act(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        else:
            raise signal_exit(signum)

    def restore(self) -> None:
        super().restore()
        if self.pending is not None:  # a signal came during the renames: act on it now
            signum, self.pending = self.pending, None
            self.act(signum, None)


@contextmanager
def staged_output(dest: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``dest``; on success it replaces ``dest`` whole.

    Stale staging folders of ``dest`` (:func:`clear_stale_staging`) are removed first. SIGTERM and SIGINT
    raise inside the ``with`` body (see :class:`_StageSignals`), so a stopped stage removes its staging
    folder; only SIGKILL leaves one, for the next ``staged_output`` on ``dest`` to remove.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(dest)
    signals = _StageSignals()
    signals.install()
    try:
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging-{_owner()}-"))
        try:
            yield tmp
            signals.deferring = True  # dest is briefly absent below: finish the renames first
            if dest.exists():
                old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-{_owner()}-"))
                os.replace(dest, old / "x")
                os.replace(tmp, dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp, dest)
        finally:
            signals.deferring = True  # a second signal must not cut the clean-up short
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        signals.restore()
