"""Conformance checks for domain plugins: the analogue of scikit-learn's ``check_estimator``.

A plugin author runs :func:`check_domain` in their own test suite::

    from pathlib import Path

    from shared.testing.domains import check_domain
    from my_plugin import MyDomain


    def test_contract() -> None:
        check_domain(MyDomain)                      # class attributes, Params defaults, registration


    def test_contract_with_data(tmp_path: Path) -> None:
        domain = MyDomain(MyDomain.Params())
        domain.fetch(tmp_path)                      # or write a tiny fake raw folder yourself
        check_domain(MyDomain, tmp_path)            # load_splits + finalize_splits on the real files

Every failure is an :class:`AssertionError` whose message names the domain and what is wrong, so a
failing test reads as a to-do list. The project's own suite runs it over every registered domain
(``tests/test_contract.py``): a new domain is tested without new test code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import numpy as np
from datasets import ClassLabel, DatasetDict, Image, Value
from pydantic import ValidationError

from shared.config import DomainParams
from shared.data.domain import SPLITS, Domain, Modality, Task
from shared.registry import UnknownDomainError, get_domain

MODALITIES: tuple[str, ...] = get_args(Modality)
TASKS: tuple[str, ...] = get_args(Task)
INPUT_COLUMNS: dict[str, str] = {"image": "image", "text": "text"}
TEXT_DTYPES: tuple[str, ...] = ("string", "large_string")


def _fail(cls: type, message: str) -> None:
    raise AssertionError(f"domain {cls.__module__}.{cls.__qualname__}: {message}")


def check_class(cls: type[Domain]) -> DomainParams:
    """Check the class attributes and that ``cls.Params()`` validates; return the default params.

    Raises:
        AssertionError: naming the attribute and its offending value.
    """
    from shared.evaluation.metrics import METRICS

    if not (isinstance(cls, type) and issubclass(cls, Domain)):
        raise AssertionError(f"{cls!r} is not a subclass of shared.data.domain.Domain")
    for attr in ("name", "modality", "task", "datasets", "Params", "primary_metric"):
        if not hasattr(cls, attr):
            _fail(cls, f"missing class attribute '{attr}'")
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        _fail(cls, f"name {cls.name!r} must be a valid Python identifier (it is a params.yaml key, "
                   "a folder name and a DVC stage suffix)")
    if cls.modality not in MODALITIES:
        _fail(cls, f"modality {cls.modality!r} must be one of {list(MODALITIES)}")
    if cls.task not in TASKS:
        _fail(cls, f"task {cls.task!r} must be one of {list(TASKS)}")
    if not isinstance(cls.datasets, tuple) or not cls.datasets:
        _fail(cls, f"datasets must be a non-empty tuple of names, got {cls.datasets!r}")
    bad = [d for d in cls.datasets if not isinstance(d, str) or not d]
    if bad:
        _fail(cls, f"datasets must hold non-empty strings, got {bad!r}")
    if cls.primary_metric not in METRICS:
        _fail(cls, f"primary_metric {cls.primary_metric!r} is not a known metric {sorted(METRICS)}")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, DomainParams)):
        _fail(cls, f"Params must be a subclass of shared.config.DomainParams, got {cls.Params!r}")
    formats = getattr(cls, "formats", ())
    if formats:  # a reader of the user's own data (domains/own): no defaults without a path; a minimal section
        try:
            return cls.Params.model_validate({"data": {"format": formats[0], "path": "."}})
        except ValidationError as err:
            _fail(cls, f"Params must validate a minimal own-data section (data: format, path): {err}")
    try:
        params = cls.Params.model_validate({})
    except ValidationError as err:
        _fail(cls, f"Params() must validate with its defaults (give data and model defaults): {err}")
    dataset = getattr(params.data, "dataset", None)
    if dataset not in cls.datasets:
        _fail(cls, f"default data.dataset {dataset!r} is not in datasets {list(cls.datasets)}")
    return params


def check_registered(cls: type[Domain]) -> None:
    """Check that ``cls`` is the class registered under ``cls.name``."""
    try:
        registered = get_domain(cls.name)
    except UnknownDomainError as err:
        _fail(cls, f"not registered (decorate it with @register_domain or declare an entry point in "
                   f"the 'transferlab.domains' group): {err}")
    if registered is not cls:
        _fail(cls, f"name '{cls.name}' is registered by {registered.__module__}.{registered.__qualname__}")


def _check_label_feature(cls: type, split: str, feature: Any, task: str) -> ClassLabel:
    if not isinstance(feature, ClassLabel):
        _fail(cls, f"split '{split}': 'label' must be a datasets ClassLabel, got {feature!r}")
    return feature


def check_splits_contract(cls: type[Domain], dd: Any, modality: str, task: str) -> None:
    """Check a ``load_splits`` result: splits, input column, one label map, non-empty splits.

    Raises:
        AssertionError: naming the split and the problem.
    """
    if not isinstance(dd, DatasetDict):
        _fail(cls, f"load_splits must return a datasets.DatasetDict, got {type(dd).__name__}")
    names = list(dd)
    missing = [s for s in ("train", "test") if s not in dd]
    if missing:
        _fail(cls, f"load_splits is missing split(s) {missing}; got {names} (validation is optional)")
    extra = [s for s in names if s not in SPLITS]
    if extra:
        _fail(cls, f"load_splits returned unexpected split(s) {extra}; allowed: {list(SPLITS)}")
    column = INPUT_COLUMNS[modality]
    reference: ClassLabel | None = None
    for split in names:
        ds = dd[split]
        features = ds.features
        if column not in features:
            _fail(cls, f"split '{split}' has no '{column}' column; columns: {list(features)}")
        feature = features[column]
        if modality == "image" and not isinstance(feature, Image):
            _fail(cls, f"split '{split}': 'image' must be a datasets Image feature, got {feature!r}")
        if modality == "text" and not (isinstance(feature, Value) and feature.dtype in TEXT_DTYPES):
            _fail(cls, f"split '{split}': 'text' must be a string Value, got {feature!r}")
        if "label" not in features:
            _fail(cls, f"split '{split}' has no 'label' column; columns: {list(features)}")
        label = _check_label_feature(cls, split, features["label"], task)
        if reference is None:
            reference = label
        elif label.names != reference.names:
            _fail(cls, f"split '{split}' label names {label.names} differ from split '{names[0]}' "
                       f"{reference.names}; one label map must be shared by all splits")
        if len(ds) == 0:
            _fail(cls, f"split '{split}' is empty")
        first = ds[0][column]
        if modality == "text" and not (isinstance(first, str) and first.strip()):
            _fail(cls, f"split '{split}': first text is {first!r}; expected a non-empty string")
        if modality == "image" and not hasattr(first, "size"):
            _fail(cls, f"split '{split}': first image decodes to {type(first).__name__}, not a PIL image")
        ids = np.asarray(ds["label"])
        if ids.min() < 0 or ids.max() >= label.num_classes:
            _fail(cls, f"split '{split}': label ids {ids.min()}..{ids.max()} outside 0..{label.num_classes - 1}")
    assert reference is not None
    if task == "binary" and reference.num_classes != 2:
        _fail(cls, f"task 'binary' needs exactly 2 classes, got {reference.names}")
    if reference.num_classes < 2:
        _fail(cls, f"a classification task needs at least 2 classes, got {reference.names}")


def check_domain(cls: type[Domain], raw_dir: Path | None = None, *,
                 params: DomainParams | None = None) -> None:
    """Check that ``cls`` honours the domain plugin contract (see :mod:`shared.data.domain`).

    Always: the class attributes (``name`` an identifier, ``modality``, ``task``, non-empty
    ``datasets``, a ``Params`` model that validates with its defaults, a known ``primary_metric``) and
    that ``cls`` is registered under its name. With ``raw_dir`` (a folder ``fetch`` filled):
    ``load_splits(raw_dir)`` returns a ``DatasetDict`` with ``train`` and ``test`` (``validation``
    optional), the right input column (``image`` as a datasets ``Image``, ``text`` as a string), one
    ``label`` ``ClassLabel`` shared by every split, no empty split; and
    :func:`shared.data.splits.finalize_splits` accepts the result.

    Args:
        cls: the domain class.
        raw_dir: a folder holding fetched raw files, or None for the static checks only.
        params: the params the files were fetched with (default ``cls.Params()``), e.g. to select a
            small embedded dataset.

    Raises:
        AssertionError: with a message naming the domain and the broken rule.
    """
    defaults = check_class(cls)
    check_registered(cls)
    if raw_dir is None:
        return
    params = params if params is not None else defaults
    if not isinstance(params, cls.Params):
        _fail(cls, f"params must be an instance of {cls.Params.__qualname__}, got {type(params).__name__}")
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        _fail(cls, f"raw_dir {raw_dir} is not a directory")
    domain = cls(params)
    dd = domain.load_splits(raw_dir)
    # ``task`` may depend on the dataset (read it from the instance, as the pipeline does)
    check_splits_contract(cls, dd, domain.modality, domain.task)
    from shared.data.splits import finalize_splits

    try:
        finalize_splits(dd, params.data, seed=0)
    except Exception as err:
        _fail(cls, f"shared.data.splits.finalize_splits rejects load_splits' output: "
                   f"{type(err).__name__}: {err}")
