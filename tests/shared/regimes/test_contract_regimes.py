"""Every registered regime passes ``check_regime``; the checker names what a broken regime gets wrong;
adapter settings pass through to PEFT under PEFT's names; L2-SP matches its formula."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from shared.config import DataParams, DomainParams, ModelParams, Strict, TrainOverrides
from shared.regimes.base import FittedRegime, NetworkRegime, Prepared, RegimeContext
from shared.regimes.l2sp import l2sp_penalty
from shared.regimes.lora import LoraAdapter, LoraParams, make_lora_config
from shared.registry import get_regime, list_regimes
from shared.testing.regimes import check_regime

BUILT_IN = ["baseline", "bitfit", "dora", "frozen", "full", "l2sp", "lora", "lp_ft", "partial", "scratch"]


def test_built_in_regimes_are_registered_through_entry_points() -> None:
    assert set(BUILT_IN) <= set(list_regimes())
    assert get_regime("bitfit").__module__ == "shared.regimes.bitfit"


@pytest.mark.parametrize("name", list_regimes())
def test_registered_regime_conforms(name: str) -> None:
    check_regime(get_regime(name))


def test_every_domain_section_gets_every_regime_with_defaults() -> None:
    dp = DomainParams(data=DataParams(dataset="x"), model=ModelParams(backbone="b"))
    assert set(dp.regimes) == set(list_regimes())
    assert dp.regimes["partial"].blocks == 2


def test_unknown_regime_section_lists_the_registered_ones() -> None:
    with pytest.raises(ValidationError, match="unknown regime.*'nosuch'.*registered regimes"):
        DomainParams(data=DataParams(dataset="x"), model=ModelParams(backbone="b"), regimes={"nosuch": {}})


def test_bad_key_in_a_regime_section_names_it() -> None:
    with pytest.raises(ValidationError, match=r"regimes\.partial\.blockz"):
        DomainParams(data=DataParams(dataset="x"), model=ModelParams(backbone="b"),
                     regimes={"partial": {"blockz": 3}})


class _NoName(NetworkRegime[TrainOverrides]):
    description: ClassVar[str] = "x"
    Params = TrainOverrides

    def prepare(self, model: nn.Module, ctx: RegimeContext) -> Prepared:
        return Prepared(model, [])


class _Both(NetworkRegime[TrainOverrides], FittedRegime[TrainOverrides]):  # type: ignore[misc]
    name: ClassVar[str] = "both"
    description: ClassVar[str] = "x"
    Params = TrainOverrides


class _NoPrepare(NetworkRegime[TrainOverrides]):
    name: ClassVar[str] = "noprepare"
    description: ClassVar[str] = "x"
    Params = TrainOverrides


class _Unregistered(_NoName):
    name: ClassVar[str] = "unregistered"


class _BadParams(Strict):
    needed: int


class _BadDefaults(_NoName):
    name: ClassVar[str] = "baddefaults"
    Params = _BadParams


@pytest.mark.parametrize(("cls", "message"), [
    (int, "not a subclass"),
    (_NoName, "missing class attribute 'name'"),
    (_Both, "exactly one of NetworkRegime"),
    (_NoPrepare, "must implement prepare"),
    (_BadDefaults, "Params\\(\\) must validate"),
    (_Unregistered, "not registered under 'unregistered'"),
])
def test_check_regime_names_the_fault(cls: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_regime(cls)


def test_adapter_settings_pass_through_to_peft_under_peft_names() -> None:
    adapter = LoraAdapter.model_validate({"type": "lora", "r": 4, "lora_alpha": 8, "use_dora": True,
                                          "use_rslora": True, "bias": "lora_only"})
    config = make_lora_config(adapter.settings(["query"]))
    assert (config.r, config.lora_alpha, config.use_dora, config.use_rslora, config.bias) == (4, 8, True, True,
                                                                                              "lora_only")
    assert list(config.target_modules) == ["query"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"alpha": 4}, "unknown LoraConfig field.*'alpha'"),
    ({"r": "eight"}, "valid integer"),
    ({"use_dora": True, "lora_bias": True}, "not supported for DoRA"),
])
def test_adapter_settings_are_validated_by_peft(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LoraParams.model_validate({"adapter": settings})


@pytest.mark.parametrize("settings", [{"use_dora": "maybe"}, {"use_rslora": 2}])
def test_settings_checked_here_still_need_their_type(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="valid boolean"):
        LoraParams.model_validate({"adapter": settings})


def test_the_repository_params_load_without_importing_peft() -> None:
    """Every stage loads params.yaml; PEFT's import (seconds) is left to the stages that adapt a model."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    code = ("import sys; from shared.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'peft'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_dora_regime_defaults_to_use_dora() -> None:
    dp = DomainParams(data=DataParams(dataset="x"), model=ModelParams(backbone="b"))
    assert dp.regimes["dora"].adapter.model_extra == {"use_dora": True}
    assert not (dp.regimes["lora"].adapter.model_extra or {}).get("use_dora")


class _TwoLayer(nn.Module):
    """A backbone Linear and a head Linear with known weights."""

    head_name = "head"

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
            self.head.weight.copy_(torch.tensor([[1.0, -2.0]]))

    def head_parameter_names(self) -> set[str]:
        return {"head.weight"}


def test_l2sp_penalty_matches_a_hand_computed_case() -> None:
    """Li et al. 2018, eq. 3: alpha/2 ||w - w0||^2 + beta/2 ||w_head||^2."""
    model = _TwoLayer()
    penalty = l2sp_penalty(model, alpha=0.1, beta=0.01)
    # at the start point only the head term remains: 0.01 / 2 * (1 + 4) = 0.025
    assert penalty(model).item() == pytest.approx(0.025)
    with torch.no_grad():
        model.body.weight.add_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))  # ||w - w0||^2 = 1 + 4 = 5
    assert penalty(model).item() == pytest.approx(0.1 / 2 * 5 + 0.025)
    penalty(model).backward()
    # d/dw of alpha/2 ||w - w0||^2 = alpha (w - w0); of beta/2 ||h||^2 = beta h
    assert torch.allclose(model.body.weight.grad, torch.tensor([[0.1, 0.0], [0.0, -0.2]]))
    assert torch.allclose(model.head.weight.grad, torch.tensor([[0.01, -0.02]]))
