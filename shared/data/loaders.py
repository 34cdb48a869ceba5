"""Model-ready inputs from a prepared split: images decoded once to a uint8 tensor at the backbone's
resolution (normalisation runs on the device, inside the model), text tokenised once by the
backbone's tokenizer and padded per batch."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from torch.utils.data import DataLoader, WeightedRandomSampler
from torch.utils.data import Dataset as TorchDataset

from shared.data.images import decode_image


class ImageTensors(TorchDataset):
    """(uint8 image (3, S, S), label) pairs held in memory; optional horizontal-flip augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[i]


class TextTokens(TorchDataset):
    """Pre-tokenised sentences (lists of ids) and labels.

    ``order``: where item i came from in the split (``None``: the split's own order). An evaluation set is
    held sorted by length so that its batches pad to fewer tokens; :func:`in_split_order` undoes it.
    """

    def __init__(self, encodings: dict[str, list[list[int]]], labels: torch.Tensor,
                 order: np.ndarray | None = None) -> None:
        self.encodings, self.labels, self.order = encodings, labels, order

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = int(self.labels[i])
        return item


def image_tensor(source: str | Path | bytes, size: int, name: str | None = None) -> torch.Tensor:
    """One image (a path or encoded bytes) fully decoded as RGB, resized to ``size`` x ``size`` (bicubic),
    as a uint8 tensor (3, size, size): the evaluation preprocessing, shared by training and serving."""
    img = decode_image(source, name=name)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def decode_images(split: Dataset, size: int) -> torch.Tensor:
    """Decode every image of ``split`` with :func:`image_tensor`."""
    out = torch.empty((len(split), 3, size, size), dtype=torch.uint8)
    images = split.cast_column("image", split.features["image"].__class__(decode=False))["image"]
    for i, item in enumerate(images):
        out[i] = image_tensor(item["bytes"] if item.get("bytes") else item["path"], size, name=item.get("path"))
    return out


def labels_of(split: Dataset) -> torch.Tensor:
    """The ``label`` column as an int64 tensor."""
    return torch.tensor(list(split["label"]), dtype=torch.long)


def make_dataset(split: Dataset, model: Any, *, tokenizer: Any = None, max_length: int | None = None,
                 augment: bool = False, sort_by_length: bool = False) -> TorchDataset:
    """A torch dataset of model inputs for ``split`` (see the module docstring).

    ``sort_by_length`` (text): hold the items shortest first (for evaluation: about half the padded tokens
    on variable-length reports); outputs over it go back to the split's order with :func:`in_split_order`.
    """
    labels = labels_of(split)
    if "image" in split.column_names:
        return ImageTensors(decode_images(split, model.image_size), labels, augment=augment)
    encodings = tokenizer(list(split["text"]), truncation=True, max_length=max_length)
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encodings]
    columns = {k: encodings[k] for k in keep}
    if not sort_by_length:
        return TextTokens(columns, labels)
    order = np.argsort([len(ids) for ids in columns["input_ids"]], kind="stable")
    return TextTokens({k: [v[i] for i in order] for k, v in columns.items()}, labels[torch.from_numpy(order)],
                      order=order)


def in_split_order(dataset: TorchDataset, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-item outputs computed over ``dataset`` in its item order, put back in the split's order."""
    order = getattr(dataset, "order", None)
    if order is None:
        return arrays
    inverse = np.argsort(order)
    return tuple(a[inverse] for a in arrays)


def make_loader(dataset: TorchDataset, batch_size: int, *, tokenizer: Any = None, shuffle: bool = False,
                generator: torch.Generator | None = None, sample_weights: torch.Tensor | None = None,
                num_workers: int = 0, pin_memory: bool = False, group_by_length: bool = False) -> DataLoader:
    """A DataLoader; text batches are padded per batch with the tokenizer.

    ``group_by_length`` (text, shuffled): transformers' ``LengthGroupedSampler``: a random order whose
    consecutive batches hold sentences of similar length, so a batch pads to far fewer tokens.
    """
    collate = None
    sampler: Any = None
    if isinstance(dataset, TextTokens):
        from transformers import DataCollatorWithPadding
        from transformers.trainer_pt_utils import LengthGroupedSampler

        collate = DataCollatorWithPadding(tokenizer)
        if shuffle and group_by_length and sample_weights is None:
            lengths = [len(ids) for ids in dataset.encodings["input_ids"]]
            sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
            shuffle = False
    if sample_weights is not None:
        sampler = WeightedRandomSampler(sample_weights.double().tolist(), len(sample_weights),
                                        generator=generator)
        shuffle = False
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=generator,
                      collate_fn=collate, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)


def timing_batch(loader: DataLoader) -> tuple[Any, torch.Tensor]:
    """(inputs, labels) of the batch halfway through ``loader``: what precision ``auto`` times. For a set
    held sorted by length that batch pads to about the median length; its first batch would be the
    shortest, where bf16 gains least (the nlp validation set's first batch: 1.15x on an Intel Xeon with AMX,
    where 64-token batches gain 3.1x)."""
    return split_batch(next(islice(iter(loader), len(loader) // 2, None)))


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """(inputs, labels) from an image ``(x, y)`` or a text dict batch."""
    if isinstance(batch, (list, tuple)):
        return batch[0], batch[1]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs, batch["labels"]
