"""``lora`` and ``dora``: PEFT low-rank adapters + the head (``modules_to_save``).

The ``adapter`` section passes PEFT's own ``LoraConfig`` fields through under PEFT's names (``r``,
``lora_alpha``, ``lora_dropout``, ``target_modules``, ``use_dora``, ``use_rslora``, ``bias``, ...),
validated against ``LoraConfig`` itself, so a user who knows PEFT learns no second vocabulary.
``target_modules`` defaults to the backbone's choice (:meth:`lora_targets`); the head is always in
``modules_to_save``. This is the only module that imports PEFT (lazily: importing PEFT takes seconds).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StrictInt, model_validator
from torch import nn

from shared.config import Strict, TrainOverrides
from shared.regimes.base import NetworkRegime, Prepared, RegimeContext
from shared.regimes.finetune import freeze_batchnorm_stats, zero_head
from shared.registry import register_regime

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier

# LoraConfig fields that describe a saved adapter or a task, not a training setting
NOT_SETTINGS = frozenset({"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                          "revision", "inference_mode"})


# LoraConfig fields checked here, with their types: settings of only the declared fields and these need no
# PEFT import (seconds in every stage that loads params.yaml); any other field is checked by PEFT itself
CHECKED_HERE: dict[str, type] = {"use_dora": bool, "use_rslora": bool}


def lora_config_fields() -> set[str]:
    """The ``LoraConfig`` fields a params file may set."""
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)} - NOT_SETTINGS


def make_lora_config(settings: dict[str, Any]) -> Any:
    """A ``peft.LoraConfig`` from PEFT-named settings (type-checked by pydantic against the dataclass)."""
    from peft import LoraConfig
    from pydantic import TypeAdapter

    return TypeAdapter(LoraConfig).validate_python(settings)


class LoraAdapter(Strict):
    """A PEFT LoRA adapter: ``type: lora`` plus any ``LoraConfig`` field under its PEFT name."""

    model_config = ConfigDict(extra="allow")
    type: Literal["lora"] = "lora"
    r: StrictInt = Field(default=8, ge=1)
    lora_alpha: StrictInt = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | None = None  # None: the backbone's default targets

    @model_validator(mode="after")
    def _peft_fields(self) -> LoraAdapter:
        extra = dict(self.model_extra or {})
        if all(isinstance(value, CHECKED_HERE.get(key, ())) for key, value in extra.items()):
            return self  # nothing only PEFT can check: spare every stage that loads params PEFT's import
        unknown = sorted(set(extra) - lora_config_fields())
        if unknown:
            raise ValueError(f"unknown LoraConfig field(s) {unknown}; PEFT's LoraConfig takes "
                             f"{sorted(lora_config_fields())}")
        make_lora_config(self.settings(["x"]))  # PEFT's own checks (types, incompatible options)
        return self

    def settings(self, default_targets: list[str]) -> dict[str, Any]:
        """The ``LoraConfig`` keyword arguments (``target_modules`` filled with the backbone's default)."""
        out = self.model_dump(exclude={"type"})
        out["target_modules"] = self.target_modules or default_targets
        return out


class LoraParams(TrainOverrides):
    """LoRA regime: adapters + head (``modules_to_save``)."""

    adapter: LoraAdapter = Field(default_factory=LoraAdapter)


class DoraParams(LoraParams):
    """DoRA: LoRA with weight decomposition (PEFT ``use_dora``); the same keys as ``lora``."""

    adapter: LoraAdapter = Field(default_factory=lambda: LoraAdapter.model_validate({"use_dora": True}))


def apply_lora(model: Classifier, adapter: LoraAdapter) -> nn.Module:
    """Wrap ``model`` with PEFT adapters; the head trains fully through ``modules_to_save``."""
    from peft import get_peft_model

    settings = adapter.settings(model.lora_targets())
    settings["modules_to_save"] = [*(settings.get("modules_to_save") or []), model.head_name]
    return get_peft_model(model, make_lora_config(settings))


@register_regime
class Lora(NetworkRegime[LoraParams]):
    """Adapters + head at ``lr``; the frozen backbone keeps its BatchNorm statistics."""

    name: ClassVar[str] = "lora"
    description: ClassVar[str] = "LoRA adapters + head (PEFT, modules_to_save)"
    Params = LoraParams

    def prepare(self, model: Classifier, ctx: RegimeContext) -> Prepared:
        """Wrap with the adapter; one optimizer group of every trainable parameter."""
        train = self.train_params(ctx.params)
        if train.head_init == "zeros":
            zero_head(model)
        wrapped = apply_lora(model, self.params.adapter)
        freeze_batchnorm_stats(wrapped)
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        return Prepared(wrapped, [{"params": trainable, "lr": train.lr, "weight_decay": train.weight_decay,
                                 "name": self.name}])


@register_regime
class Dora(Lora):
    """DoRA (Liu et al. 2024): LoRA whose update is split into magnitude and direction (PEFT ``use_dora``)."""

    name: ClassVar[str] = "dora"
    description: ClassVar[str] = "DoRA adapters (weight-decomposed LoRA) + head"
    Params = DoraParams
