"""Bad input fails fast, with a message that names the problem, and before any output is written."""

from __future__ import annotations

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
