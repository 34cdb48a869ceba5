"""Shared fixtures: a tiny BERT folder, tiny image / text datasets, and an isolated MLflow store.

Everything here is sized for a 2-core CPU: the tiny BERT has 2 layers of width 32, the image sets are
32 x 32 pixels and a few dozen items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from shared.config import ModelParams
from shared.data.splits import build_label_map, make_split

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32

POSITIVE = ["a wonderful, moving and funny film", "great acting and a brilliant story",
            "i loved every minute", "superb, charming and beautiful", "an excellent, delightful surprise",
            "the best film this year"]
NEGATIVE = ["a dull, boring and awful mess", "terrible acting and a stupid plot", "i hated every minute",
            "bad, tedious and ugly", "a horrible, painful waste of time", "the worst film this year"]


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread (restored afterwards): large convolutions on two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden size 32) saved with the packaged MiniLM's tokenizer, loadable offline."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from shared.models.weights import minilm_dir

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_hidden_layers=2, hidden_size=32,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_bert_params(tiny_bert_dir: Path) -> ModelParams:
    """``ModelParams`` that load the tiny BERT as a 'pretrained' text backbone."""
    return ModelParams(backbone=str(tiny_bert_dir), pretrained=True, max_length=32)


@pytest.fixture()
def tiny_image_params() -> ModelParams:
    """timm's ``test_efficientnet`` (random init, ~100k parameters) at 32 px."""
    return ModelParams(backbone="test_efficientnet", pretrained=False, image_size=IMAGE_SIZE)


def image_split_arrays(n: int, num_classes: int = 2, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Separable 32 x 32 RGB images: class c is a bright square in quadrant c on a noisy dark background."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    half = IMAGE_SIZE // 2
    for i in range(n):
        label = i % num_classes
        img = rng.integers(0, 40, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        r, c = divmod(label % 4, 2)
        img[r * half:(r + 1) * half, c * half:(c + 1) * half] = rng.integers(200, 256, size=(half, half, 3))
        images.append(img)
        labels.append(label)
    return images, labels


def make_image_dd(n_train: int = 32, n_eval: int = 16, num_classes: int = 2, seed: int = 0) -> DatasetDict:
    """A tiny separable image ``DatasetDict`` (train/validation/test) built with ``make_split``."""
    label_map = build_label_map([f"class{c}" for c in range(num_classes)])
    splits = {}
    for offset, (split, n) in enumerate((("train", n_train), ("validation", n_eval), ("test", n_eval))):
        images, labels = image_split_arrays(n, num_classes, seed + offset)
        splits[split] = make_split(images, labels, label_map, modality="image", source=f"tiny-{split}")
    return DatasetDict(splits)


def make_text_dd(n_train: int = 24, n_eval: int = 12) -> DatasetDict:
    """A tiny sentiment ``DatasetDict`` (train/validation/test) built with ``make_split``."""
    label_map = build_label_map(["negative", "positive"])
    splits = {}
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        texts, labels = [], []
        for i in range(n):
            pool = POSITIVE if i % 2 else NEGATIVE
            texts.append(f"{pool[(i // 2) % len(pool)]} ({split} {i})")
            labels.append("positive" if i % 2 else "negative")
        splits[split] = make_split(texts, labels, label_map, modality="text", source=f"tiny-{split}")
    return DatasetDict(splits)


@pytest.fixture()
def image_dd() -> DatasetDict:
    """Tiny binary image splits (32 train, 16 validation, 16 test)."""
    return make_image_dd()


@pytest.fixture()
def text_dd() -> DatasetDict:
    """Tiny binary sentiment splits (24 train, 12 validation, 12 test)."""
    return make_text_dd()


@pytest.fixture()
def image_dd_factory() -> Callable[..., DatasetDict]:
    """Build image splits with other sizes / class counts."""
    return make_image_dd


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Measured precision choices (``train.precision: auto``) go to a cache of this test session, never the
    user's ``~/.cache/transferlab`` (stage subprocesses inherit the variable)."""
    import os

    old = os.environ.get("TRANSFERLAB_CACHE")
    os.environ["TRANSFERLAB_CACHE"] = str(tmp_path_factory.mktemp("transferlab-cache"))
    yield
    if old is None:
        os.environ.pop("TRANSFERLAB_CACHE", None)
    else:
        os.environ["TRANSFERLAB_CACHE"] = old


# What a test run may not leave in the checkout: a tracking store or its artifacts (tests use temporary ones)
CHECKOUT_STORES = ("mlruns", "mlartifacts", "mlflow.db")


@pytest.fixture(autouse=True, scope="session")
def _checkout_untouched() -> Iterator[None]:
    """Fail the session if a test wrote an MLflow store or artifacts into the checkout (a store created with
    the checkout as working directory puts its Default experiment's artifacts in ``./mlruns``)."""
    before = {name for name in CHECKOUT_STORES if (REPO_ROOT / name).exists()}
    yield
    after = {name for name in CHECKOUT_STORES if (REPO_ROOT / name).exists()}
    assert after <= before, f"the tests wrote {sorted(after - before)} into {REPO_ROOT}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The default end-to-end tests last (otherwise in order): the first ``dvc repro`` of their projects, started
    when collection ends (:func:`pytest_collection_finish`), then runs beside every other test instead of the
    suite waiting for it halfway."""
    items.sort(key=lambda item: "default_projects" in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the default end-to-end tests are selected, start their two projects' first ``dvc repro`` now,
    in the background (``tests/test_e2e.py``: :func:`start_default_projects`): their ~45 stage processes
    then overlap with the rest of the suite instead of following it."""
    if session.config.option.collectonly:
        return
    item = next((i for i in session.items if "default_projects" in getattr(i, "fixturenames", ())), None)
    import shutil
    import tempfile

    if item is None or shutil.which("dvc") is None or shutil.which("git") is None:
        return  # (the tests skip themselves without dvc and git)
    module = item.module  # type: ignore[attr-defined]
    base = Path(tempfile.mkdtemp(prefix="transferlab-e2e-"))
    session.config.stash[_E2E_BASE] = (module, base)
    try:
        module.STARTED.update(module.start_default_projects(base))
    except Exception:  # the fixture starts them again in the test, where the error is reported
        module.stop(module.STARTED)
        module.STARTED.clear()


_E2E_BASE = pytest.StashKey[tuple[Any, Path]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop early-started end-to-end runs a session left behind and remove their folder."""
    started = session.config.stash.get(_E2E_BASE, None)
    if started is not None:
        import shutil

        module, base = started
        module.stop(module.STARTED)
        shutil.rmtree(base, ignore_errors=True)
