"""Data loaders: length-grouped text batches."""

from __future__ import annotations

import torch

from shared.data import TextTokens, make_loader


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
