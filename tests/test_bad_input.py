"""Bad input fails fast, with a message that names the problem, and before any output is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.config import ParamsError
from shared.registry import UnknownDomainError, list_domains, list_regimes

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project root (``TRANSFERLAB_ROOT``) holding only a valid ``params.yaml``."""
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("TRANSFERLAB_MIRROR", raising=False)  # nothing may be fetched anyway
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    return tmp_path


def contents(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_fetch_with_a_typo_in_params_fails_before_writing(root: Path) -> None:
    from pipelines import fetch

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["vision"]["data"]["validation_fracton"] = 0.2
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as info:
        fetch.main(["--domain", "vision", "--params", str(bad)])
    assert f"{bad}: invalid parameters" in str(info.value)
    assert "vision.data.validation_fracton: Extra inputs are not permitted (got 0.2)" in str(info.value)
    assert contents(root) == ["bad.yaml", "params.yaml"]  # no data/ folder


def test_fetch_reads_root_params_by_default(root: Path) -> None:
    from pipelines import fetch

    (root / "params.yaml").write_text("seed: -1\ndomains: [vision]\nregimes: [frozen]\nvision: {}\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: invalid parameters\n  seed: Input should be greater "
                                          r"than or equal to 0 \(got -1\)"):
        fetch.main(["--domain", "vision"])
    assert contents(root) == ["params.yaml"]


def test_fetch_unknown_domain_lists_valid_choices(root: Path) -> None:
    from pipelines import fetch

    with pytest.raises(UnknownDomainError) as info:
        fetch.main(["--domain", "audio"])
    assert str(info.value) == f"unknown domain 'audio'; registered domains: {list_domains()}"
    assert contents(root) == ["params.yaml"]


def test_train_unknown_regime_lists_valid_regimes(root: Path) -> None:
    from pipelines import train

    with pytest.raises(KeyError) as info:
        train.main(["--domain", "vision", "--regime", "magic"])
    assert info.value.args[0] == f"unknown regime 'magic'; registered regimes: {list_regimes()}"
    assert contents(root) == ["params.yaml"]


def test_cli_run_unknown_domain_returns_2_and_lists_domains(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    assert main(["run", "nosuchdomain", "--regime", "frozen"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"transferlab: error: unknown domain 'nosuchdomain'; registered domains: {list_domains()}"
    assert contents(root) == ["params.yaml"]


def test_cli_run_unknown_regime_fails_before_fetching(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import fetch, prepare
    from pipelines.cli import main

    ran: list[str] = []
    monkeypatch.setattr(fetch, "main", lambda argv: ran.append("fetch") or 0)
    monkeypatch.setattr(prepare, "main", lambda argv: ran.append("prepare") or 0)
    assert main(["run", "vision", "--regime", "magic"]) == 2
    assert "unknown regime 'magic'" in capsys.readouterr().err
    assert ran == []


# --- python -m pipelines.<stage>: one line and exit code 2, like `transferlab` -------------------------

STAGE_MODULES = sorted(p.stem for p in (REPO_ROOT / "pipelines").glob("*.py")
                       if p.stem not in ("__init__", "cli", "common"))


def start_module(module: str, *args: str, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TRANSFERLAB_ROOT": str(root)}
    env.pop("TRANSFERLAB_DEBUG", None)
    env.pop("TRANSFERLAB_MIRROR", None)  # nothing may be fetched anyway
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO_ROOT, env=env)


def finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


Runs = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
BAD_PARAMS = "seed: -1\ndomains: [vision]\nregimes: [frozen]\nvision: {}\n"


@pytest.fixture(scope="module")
def stage_module_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The two ``python -m pipelines.<stage>`` runs below, started side by side (each is ~10 s of imports),
    each in an empty project root holding only a valid ``params.yaml``."""
    roots = {name: tmp_path_factory.mktemp(name) for name in ("unknown_domain", "bad_params")}
    for root in roots.values():
        (root / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    (roots["bad_params"] / "bad.yaml").write_text(BAD_PARAMS)
    procs = {
        "unknown_domain": start_module("pipelines.train", "--domain", "nosuch", "--regime", "full",
                                       root=roots["unknown_domain"]),
        "bad_params": start_module("pipelines.prepare", "--domain", "vision", "--params",
                                   str(roots["bad_params"] / "bad.yaml"), root=roots["bad_params"]),
    }
    return {name: (roots[name], finished(proc)) for name, proc in procs.items()}


def test_stage_module_unknown_domain_prints_one_line_and_exits_2(
        stage_module_runs: Runs) -> None:
    root, proc = stage_module_runs["unknown_domain"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"pipelines.train: error: unknown domain 'nosuch'; registered domains: {list_domains()}"]
    assert contents(root) == ["params.yaml"]


def test_stage_module_bad_params_prints_the_error_without_traceback(
        stage_module_runs: Runs) -> None:
    root, proc = stage_module_runs["bad_params"]
    bad = root / "bad.yaml"
    assert proc.returncode == 2, proc.stderr
    first, *details = proc.stderr.splitlines()
    assert first == f"pipelines.prepare: error: {bad}: invalid parameters"
    assert details == ["  seed: Input should be greater than or equal to 0 (got -1)"]  # the same error's keys
    assert contents(root) == ["bad.yaml", "params.yaml"]


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_every_stage_module_runs_through_run_main(module: str) -> None:
    source = (REPO_ROOT / "pipelines" / f"{module}.py").read_text()
    assert source.endswith('if __name__ == "__main__":\n    run_main(main)\n'), module


@pytest.mark.parametrize(("flag", "env"), [(False, None), (True, None), (False, "1")])
def test_run_main_traceback_only_with_debug(flag: bool, env: str | None, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.common import run_main

    seen: list[list[str]] = []

    def main(argv: list[str] | None = None) -> int:
        seen.append(list(argv or []))
        raise KeyError("unknown regime 'magic'")

    monkeypatch.setattr(sys, "argv", ["train.py", "--regime", "magic"] + (["--debug"] if flag else []))
    if env is None:
        monkeypatch.delenv("TRANSFERLAB_DEBUG", raising=False)
    else:
        monkeypatch.setenv("TRANSFERLAB_DEBUG", env)
    with pytest.raises(SystemExit) as info:
        run_main(main)
    assert info.value.code == 2
    assert seen == [["--regime", "magic"]]  # --debug is not passed on
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(": error: unknown regime 'magic'")  # no KeyError quotes
    assert ("Traceback" in err) == (flag or env == "1")


def test_run_main_passes_the_exit_code_and_unexpected_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.common import run_main

    monkeypatch.setattr(sys, "argv", ["x.py"])
    with pytest.raises(SystemExit) as info:
        run_main(lambda argv: 3)
    assert info.value.code == 3

    def bug(argv: list[str]) -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):  # not an expected error: Python prints the traceback
        run_main(bug)
