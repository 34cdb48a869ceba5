"""Data loaders: length-grouped text batches for training, length-sorted evaluation sets."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from shared.config import ModelParams, TrainParams
from shared.data.features import extract_features
from shared.data.loaders import TextTokens, in_split_order, make_dataset, make_loader, timing_batch
from shared.data.splits import build_label_map, make_split
from shared.models import build_model, load_tokenizer
from shared.training.loop import make_accelerator, predict


class _Tokenizer:
    """Just enough of a tokenizer for ``DataCollatorWithPadding``: pads ``input_ids`` with 0."""

    padding_side = "right"
    pad_token_id = 0
    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, features, **kwargs):  # noqa: ANN001, ANN003, ANN201
        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        labels = [f["labels"] for f in features]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def _dataset(n: int = 400) -> TextTokens:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 60, (n,), generator=gen).tolist()
    ids = [[i % 97 + 1] * length for i, length in enumerate(lengths)]  # item i is recognisable by its tokens
    return TextTokens({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}, torch.arange(n) % 2)


def _epoch(grouped: bool, seed: int) -> tuple[list[int], int]:
    """(labels in order, padded tokens) of one shuffled epoch."""
    generator = torch.Generator().manual_seed(seed)
    loader = make_loader(_dataset(), 16, tokenizer=_Tokenizer(), shuffle=True, generator=generator,
                         group_by_length=grouped)
    order, padded = [], 0
    for batch in loader:
        order += batch["input_ids"][:, 0].tolist()
        padded += int(batch["input_ids"].numel())
    return order, padded


def test_length_grouped_batches_pad_less_and_keep_every_item() -> None:
    plain, plain_tokens = _epoch(False, 0)
    grouped, grouped_tokens = _epoch(True, 0)
    assert sorted(grouped) == sorted(plain)  # the same examples, once each
    assert grouped_tokens < 0.75 * plain_tokens, (grouped_tokens, plain_tokens)
    assert _epoch(True, 0)[0] == grouped  # the generator's seed fixes the order (exact resume)
    assert _epoch(True, 1)[0] != grouped


def _ragged_split(n: int = 40) -> Dataset:
    """Sentences of 1 to 20 words in a shuffled order, labels alternating."""
    rng = np.random.default_rng(0)
    words = rng.permutation(np.arange(1, n + 1) % 20 + 1)
    texts = [" ".join(["fine" if i % 2 else "poor"] * int(k)) + f" {i}" for i, k in enumerate(words)]
    labels = ["positive" if i % 2 else "negative" for i in range(n)]
    return make_split(texts, labels, build_label_map(["negative", "positive"]), modality="text", source="ragged")


def test_length_sorted_eval_set_pads_less_and_outputs_come_back_in_split_order(
        tiny_bert_params: ModelParams) -> None:
    split = _ragged_split()
    model = build_model(tiny_bert_params, "text", 2, pretrained=True).eval()
    tokenizer = load_tokenizer(tiny_bert_params)
    plain = make_dataset(split, model, tokenizer=tokenizer, max_length=32)
    ordered = make_dataset(split, model, tokenizer=tokenizer, max_length=32, sort_by_length=True)
    lengths = [len(ids) for ids in ordered.encodings["input_ids"]]
    assert lengths == sorted(lengths) and list(ordered.order) != sorted(ordered.order)
    loaders = {name: make_loader(ds, 8, tokenizer=tokenizer) for name, ds in (("plain", plain), ("sorted", ordered))}
    padded = {name: sum(int(b["input_ids"].numel()) for b in loader) for name, loader in loaders.items()}
    assert padded["sorted"] < 0.8 * padded["plain"], padded

    accelerator = make_accelerator(TrainParams(), cpu=True)
    probs, labels, _ = predict(model, loaders["plain"], accelerator)
    sorted_probs, sorted_labels, _ = predict(model, loaders["sorted"], accelerator)
    assert np.array_equal(sorted_labels, np.asarray(split["label"])) and np.array_equal(labels, sorted_labels)
    np.testing.assert_allclose(sorted_probs, probs, atol=1e-5)  # same items, same place; only padding differs
    feats, feat_labels = extract_features(model, loaders["plain"], torch.device("cpu"))
    sorted_feats, sorted_feat_labels = extract_features(model, loaders["sorted"], torch.device("cpu"))
    assert np.array_equal(sorted_feat_labels, feat_labels)
    np.testing.assert_allclose(sorted_feats, feats, atol=1e-5)


def test_in_split_order_is_the_identity_for_unsorted_sets() -> None:
    values = np.arange(5.0)
    assert in_split_order(_dataset(5), values)[0] is values


def test_timing_batch_of_a_length_sorted_set_is_its_median_length_batch(tiny_bert_params: ModelParams) -> None:
    split = _ragged_split()  # 40 sentences, 5 batches of 8: the first pads shortest, the third is in the middle
    model = build_model(tiny_bert_params, "text", 2, pretrained=True).eval()
    tokenizer = load_tokenizer(tiny_bert_params)
    loader = make_loader(make_dataset(split, model, tokenizer=tokenizer, max_length=32, sort_by_length=True), 8,
                         tokenizer=tokenizer)
    widths = [int(b["input_ids"].shape[1]) for b in loader]
    inputs, labels = timing_batch(loader)
    assert widths[0] < widths[2] < widths[-1], widths
    assert inputs["input_ids"].shape == (8, widths[2]) and labels.shape == (8,)
    assert "labels" not in inputs
