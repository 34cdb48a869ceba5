"""What every stage does first: parse ``--domain/--regime``, validate params before any side effect,
and write its outputs through a staging folder so a killed stage never leaves half-written outputs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import paths
from shared.config import DomainParams, ProjectParams, load_params
from shared.data.domain import Domain
from shared.regimes.base import Regime
from shared.registry import get_domain, get_regime


@dataclass
class Stage:
    """A validated stage invocation."""

    params: ProjectParams
    domain: Domain[Any]
    regime: str | None

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
        name = f"{stage}@{self.domain.name}" + (f"-{self.regime}" if self.regime else "")
        return {
            "domain": self.domain.name, "regime": self.regime or "", "backbone": self.dp.model.backbone,
            "dataset": self.dp.data.dataset, "git_commit": git_commit(), "dvc_stage": name,
            "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
        }


def git_commit() -> str:
    """HEAD's commit hash, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=paths.root(),
                             check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_stage(argv: list[str] | None, description: str, *, with_regime: bool = False) -> Stage:
    """Parse arguments and validate ``params.yaml``; errors exit before anything is written.

    Then reconcile the tracking store (:func:`reconcile_tracking`).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--domain", required=True)
    if with_regime:
        parser.add_argument("--regime", required=True)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    args = parser.parse_args(argv)
    params = load_params(args.params or paths.params_file())
    cls = get_domain(args.domain)
    regime = getattr(args, "regime", None)
    if regime is not None:
        get_regime(regime)
    stage = Stage(params=params, domain=cls(params.domain(args.domain)), regime=regime)
    reconcile_tracking()
    return stage


def reconcile_tracking() -> None:
    """Mark the runs of dead processes KILLED if a local tracking store exists (opening none otherwise).

    Every stage, ``compare`` and ``ui`` call it first, so a run SIGKILLed earlier does not stay RUNNING
    until some later stage happens to open a run. Housekeeping only: a store it cannot read is reported
    on stderr and the caller goes on.
    """
    from shared.tracking import reconcile_store

    try:
        fixed = reconcile_store()
    except Exception as err:  # never fail a stage over another run's status
        print(f"warning: could not reconcile stale MLflow runs: {type(err).__name__}: {err}", file=sys.stderr)
        return
    if fixed:
        print(f"marked {len(fixed)} stale RUNNING MLflow run(s) of dead processes KILLED", file=sys.stderr)


@contextmanager
def staged_output(dest: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``dest``; on success it replaces ``dest`` whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging-"))
    try:
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, old / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
