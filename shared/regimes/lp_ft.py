"""``lp_ft``: linear probe, then fine-tune (Kumar et al. 2022): the head starts from the frozen probe's
weights, then every weight trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from shared.config import TrainOverrides
from shared.regimes.base import Prepared, RegimeContext
from shared.regimes.finetune import FineTune, init_head_from_probe
from shared.regimes.probe import ProbeParams, probe_on_cache
from shared.registry import register_regime

if TYPE_CHECKING:  # annotations only: importing the backbones pulls in timm and transformers
    from shared.models.base import Classifier


class LpFtParams(TrainOverrides):
    """Linear probe, then fine-tune: the head starts from the frozen probe's weights."""

    probe: ProbeParams = Field(default_factory=ProbeParams)


@register_regime
class LpFt(FineTune[LpFtParams]):
    """The probe's head, then full fine-tuning with discriminative learning rates."""

    name: ClassVar[str] = "lp_ft"
    description: ClassVar[str] = "head from the frozen probe, then full fine-tuning (LP-FT)"
    Params = LpFtParams
    needs_features: ClassVar[bool] = True
    sweepable: ClassVar[bool] = False  # its probe reads every cached train label
    keeps_head: ClassVar[bool] = True

    def prepare(self, model: Classifier, ctx: RegimeContext) -> Prepared:
        """Fit the probe on the cached features, copy it into the head, then fine-tune everything."""
        probe, _ = probe_on_cache(ctx, self.params.probe)
        init_head_from_probe(model.head, *probe.raw_weights())
        prepared = super().prepare(model, ctx)
        prepared.info["probe_C"] = probe.C
        return prepared
