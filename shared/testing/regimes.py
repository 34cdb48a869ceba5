"""Conformance checks for regime plugins: the analogue of scikit-learn's ``check_estimator``.

A regime author runs :func:`check_regime` in their own tests, and :func:`tiny_context` gives a regime a
real (tiny) context to prepare or fit on::

    from shared.testing.regimes import check_regime

    def test_contract() -> None:
        check_regime(MyRegime)

Every failure is an :class:`AssertionError` naming the regime and what is wrong. The project's suite runs
it over every registered regime (``tests/shared/regimes/test_contract_regimes.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from datasets import DatasetDict
from pydantic import BaseModel, ValidationError

from shared.config import DomainParams, Strict
from shared.data.domain import Domain
from shared.data.features import FeatureCache, extract_features
from shared.data.loaders import make_dataset, make_loader
from shared.models import load_tokenizer
from shared.models.base import Classifier
from shared.regimes.base import FittedRegime, NetworkRegime, Regime, RegimeContext
from shared.registry import get_regime

FLAGS = ("pretrained", "needs_features", "uses_backbone", "sweepable", "trains_network")


def _fail(cls: type, message: str) -> None:
    raise AssertionError(f"regime {cls.__module__}.{cls.__qualname__}: {message}")


def check_regime(cls: type[Regime[Any]]) -> BaseModel:
    """Check the class attributes, the registration and that ``cls.Params()`` validates; return the defaults.

    Raises:
        AssertionError: naming the attribute and its offending value.
    """
    if not (isinstance(cls, type) and issubclass(cls, Regime)):
        raise AssertionError(f"{cls!r} is not a subclass of shared.regimes.base.Regime")
    if issubclass(cls, NetworkRegime) == issubclass(cls, FittedRegime):
        _fail(cls, "must subclass exactly one of NetworkRegime (prepare) and FittedRegime (fit)")
    for attr in ("name", "description", "Params"):
        if not hasattr(cls, attr):
            _fail(cls, f"missing class attribute '{attr}'")
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        _fail(cls, f"name {cls.name!r} must be a Python identifier (a params key and a DVC stage suffix)")
    if not isinstance(cls.description, str) or not cls.description.strip():
        _fail(cls, "description must be a non-empty string (the report and `transferlab regimes` show it)")
    for flag in FLAGS:
        if not isinstance(getattr(cls, flag, None), bool):
            _fail(cls, f"{flag} must be a bool, got {getattr(cls, flag, None)!r}")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Strict)):
        _fail(cls, f"Params must subclass shared.config.Strict (unknown keys are errors), got {cls.Params!r}")
    try:
        params = cls.Params()
    except ValidationError as err:
        _fail(cls, f"Params() must validate with its defaults: {err}")
    if issubclass(cls, NetworkRegime) and cls.prepare is NetworkRegime.prepare:
        _fail(cls, "a NetworkRegime must implement prepare(model, ctx)")
    if issubclass(cls, FittedRegime) and cls.fit is FittedRegime.fit:
        _fail(cls, "a FittedRegime must implement fit(ctx, out)")
    try:
        registered = get_regime(cls.name)
    except KeyError:
        _fail(cls, f"not registered under '{cls.name}' (decorate it with @register_regime or declare an entry "
                   "point in the 'transferlab.regimes' group)")
    if registered is not cls:
        _fail(cls, f"the name '{cls.name}' is registered by {registered.__module__}.{registered.__qualname__}")
    return params


class TinyDomain(Domain[DomainParams]):
    """A stand-in domain around given params, for regime tests."""

    name: ClassVar[str] = "tiny"
    datasets: ClassVar[tuple[str, ...]] = ("tiny",)
    task = "binary"

    def __init__(self, params: DomainParams, modality: Literal["image", "text"], metric: str = "accuracy") -> None:
        super().__init__(params)
        self.modality = modality  # type: ignore[misc]
        self.primary_metric = metric


def tiny_context(dp: DomainParams, modality: Literal["image", "text"], data: DatasetDict, folder: Path,
                 model: Classifier | None = None, seed: int = 0) -> RegimeContext:
    """A real regime context on tiny data; with ``model``, its frozen features are cached for every split
    (what ``extract`` would write), so regimes that read features (frozen, lp_ft) run too."""
    features = folder / "features"
    if model is not None:
        tokenizer = load_tokenizer(dp.model) if modality == "text" else None
        cache = FeatureCache(features, dp.model)
        for split in ("train", "validation", "test"):
            dataset = make_dataset(data[split], model, tokenizer=tokenizer, max_length=dp.model.max_length)
            loader = make_loader(dataset, 8, tokenizer=tokenizer)
            x, y = extract_features(model, loader, torch.device("cpu"))
            cache.write(split, x.astype(np.float32), y)
    return RegimeContext(domain=TinyDomain(dp, modality), seed=seed, data=data, features_dir=features)
