"""Data audit written by ``prepare``: class balance, empty items, exact and near duplicates.

Exact duplicates are found by sha256 of the *decoded* pixels (so a re-encoded copy of the same image
still matches) or of the normalised text (:func:`normalize_text`). Near duplicates (images only) are
found in two steps:

1. candidates: a 64-bit difference hash (dHash; the grey image shrunk to a 9x8 thumbnail, one bit per
   "brighter than its right neighbour") within ``near_threshold`` bits (Hamming distance);
2. confirmation: the Pearson correlation of the two 16x16 RGB thumbnails is >= ``min_correlation``.

Why two steps: on ISIC dermoscopy (a centred lesion on smooth, vignetted skin) a 64-bit hash alone is
not selective: at distance <= 4 it pairs ~1000 images, most of them different lesions, and the small
"dark dot in a vignette" images collide at distance 1-2. Checked by eye on the real data: pairs of the
same lesion correlate >= 0.979, different lesions that pass the hash <= 0.963. Exact duplicates are not
counted again as near ones.

Domains may set ``self.load_report`` in ``load_splits`` (``quarantined``: list of ``{file, split,
reason}``; ``dropped``: ``{reason: count}``); :func:`attach_load_report` adds it to the audit.

Typical use in ``prepare``::

    report = attach_load_report(audit_splits(dd, modality), domain)
    if data.dedupe_across_splits:
        dd, removed = drop_cross_split_duplicates(dd, report)
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image

from shared.data.images import decode_image

HASH_SIZE = 8  # dHash thumbnail: (HASH_SIZE + 1) x HASH_SIZE -> 64 bits
THUMB_SIZE = 16  # RGB thumbnail compared by correlation to confirm a hash candidate
DEFAULT_NEAR_THRESHOLD = 8  # dHash Hamming distance of a candidate pair (recall step)
DEFAULT_MIN_CORRELATION = 0.97  # thumbnail correlation that confirms it (precision step)
_BLOCK = 2048  # rows of the pairwise Hamming matrix computed at once (memory bound)
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case ``text`` and collapse every run of whitespace to one space (strip the ends)."""
    return _WHITESPACE.sub(" ", text.lower()).strip()


def dhash(img: Image.Image) -> int:
    """64-bit difference hash of ``img`` (any mode)."""
    grey = img.convert("L").resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def thumbnail(img: Image.Image) -> np.ndarray:
    """The centred, unit-norm 16x16 RGB thumbnail of ``img`` (a dot product of two is a correlation)."""
    vec = np.asarray(img.convert("RGB").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX),
                     dtype=np.float32).ravel()
    vec = vec - vec.mean()
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def _image_keys(ds: Dataset, split: str, thumbs: list[np.ndarray]
                ) -> tuple[list[str], list[int], list[bool], list[str]]:
    """sha256 of decoded pixels, dHash, blank flag and a display name for every image of ``ds``
    (appending each thumbnail to ``thumbs``)."""
    raw = ds.cast_column("image", ImageFeature(decode=False))["image"]
    shas, hashes, blank, names = [], [], [], []
    for i, item in enumerate(raw):
        name = item.get("path") or f"{split}[{i}]"
        source = item["bytes"] if item.get("bytes") is not None else item["path"]
        img = decode_image(source, name=name)
        pixels = np.asarray(img)
        digest = hashlib.sha256(repr(pixels.shape).encode())
        digest.update(pixels.tobytes())
        shas.append(digest.hexdigest())
        hashes.append(dhash(img))
        thumbs.append(thumbnail(img))
        blank.append(bool(pixels.size == 0 or pixels.min() == pixels.max()))
        names.append(str(name))
    return shas, hashes, blank, names


def _text_keys(ds: Dataset, split: str) -> tuple[list[str], list[bool], list[str]]:
    texts = ds["text"]
    norm = [normalize_text(t or "") for t in texts]
    shas = [hashlib.sha256(t.encode()).hexdigest() for t in norm]
    return shas, [not t for t in norm], [f"{split}[{i}]" for i in range(len(texts))]


def near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` whose 64-bit hashes differ in <= ``threshold`` bits."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start:start + _BLOCK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(dist <= threshold)
        keep = cols > rows + start
        pairs.extend((int(r + start), int(c), int(dist[r, c])) for r, c in zip(rows[keep], cols[keep],
                                                                                   strict=True))
    return pairs


def _pair_key(a: str, b: str, order: list[str]) -> str:
    return f"{a}-{b}" if order.index(a) <= order.index(b) else f"{b}-{a}"


def _summarise(pairs: list[tuple[tuple[str, int], tuple[str, int]]], order: list[str]) -> dict[str, Any]:
    within: dict[str, int] = defaultdict(int)
    across: dict[str, int] = defaultdict(int)
    for (sa, _), (sb, _) in pairs:
        if sa == sb:
            within[sa] += 1
        else:
            across[_pair_key(sa, sb, order)] += 1
    return {"within_pairs": {s: within.get(s, 0) for s in order},
            "across_pairs": {_pair_key(a, b, order): across.get(_pair_key(a, b, order), 0)
                             for a, b in combinations(order, 2)}}


def audit_splits(dd: DatasetDict, modality: str, *, near_threshold: int = DEFAULT_NEAR_THRESHOLD,
                 min_correlation: float = DEFAULT_MIN_CORRELATION) -> dict[str, Any]:
    """Audit every split of ``dd`` (an ``image`` or ``text`` column plus a ``ClassLabel`` ``label``).

    Returns a JSON-ready dict: ``sizes``, ``class_balance`` (split -> class -> count), ``empty``
    (split -> indices of blank images / empty texts), ``exact_duplicates`` and (images)
    ``near_duplicates`` (pair counts within each split and across each split pair, the groups or pairs
    themselves as ``[split, index, name]`` members, and exact groups whose labels disagree), and
    ``cross_split`` (``train_indices``: train items that duplicate, exactly or nearly, a validation or
    test item, which :func:`drop_cross_split_duplicates` removes).
    """
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    order = list(dd)
    names_of = dd[order[0]].features["label"].names
    report: dict[str, Any] = {"modality": modality, "sizes": {s: len(dd[s]) for s in order},
                              "class_balance": {}, "empty": {}}
    members: list[tuple[str, int]] = []
    shas: list[str] = []
    hashes: list[int] = []
    thumbs: list[np.ndarray] = []
    display: list[str] = []
    labels: list[int] = []
    for split in order:
        ds = dd[split]
        counts = np.bincount(np.asarray(ds["label"], dtype=np.int64), minlength=len(names_of))
        report["class_balance"][split] = {n: int(c) for n, c in zip(names_of, counts, strict=True)}
        if modality == "image":
            s, h, blank, names = _image_keys(ds, split, thumbs)
            hashes.extend(h)
        else:
            s, blank, names = _text_keys(ds, split)
        report["empty"][split] = [i for i, b in enumerate(blank) if b]
        shas.extend(s)
        display.extend(names)
        labels.extend(ds["label"])
        members.extend((split, i) for i in range(len(ds)))

    def member(k: int) -> list[Any]:
        return [members[k][0], members[k][1], display[k]]

    groups: dict[str, list[int]] = defaultdict(list)
    for k, sha in enumerate(shas):
        groups[sha].append(k)
    exact_groups = [g for g in groups.values() if len(g) > 1]
    exact_pairs = [(members[a], members[b]) for g in exact_groups for a, b in combinations(g, 2)]
    report["exact_duplicates"] = {
        **_summarise(exact_pairs, order),
        "groups": len(exact_groups),
        "items": sum(len(g) for g in exact_groups),
        "label_conflicts": [[member(k) for k in g] for g in exact_groups
                            if len({labels[k] for k in g}) > 1],
        "members": [[member(k) for k in g] for g in exact_groups],
    }
    linked: list[tuple[int, int]] = [(a, b) for g in exact_groups for a, b in combinations(g, 2)]
    if modality == "image":
        candidates = [(a, b, d) for a, b, d in near_pairs(np.asarray(hashes, dtype=np.uint64),
                                                          near_threshold) if shas[a] != shas[b]]
        corr = [float(thumbs[a] @ thumbs[b]) for a, b, _ in candidates]
        near = [(a, b, d, c) for (a, b, d), c in zip(candidates, corr, strict=True) if c >= min_correlation]
        report["near_duplicates"] = {
            "method": (f"dHash {HASH_SIZE * HASH_SIZE}-bit Hamming distance <= {near_threshold}, "
                       f"confirmed by {THUMB_SIZE}x{THUMB_SIZE} RGB thumbnail correlation >= "
                       f"{min_correlation}"),
            "hash_threshold": near_threshold,
            "min_correlation": min_correlation,
            "hash_candidates": len(candidates),
            **_summarise([(members[a], members[b]) for a, b, _, _ in near], order),
            "pairs": [[member(a), member(b), d, round(c, 4)] for a, b, d, c in near],
        }
        linked.extend((a, b) for a, b, _, _ in near)
    else:
        report["near_duplicates"] = None  # no near-duplicate detection for text (exact only)
    train_dups = {members[x][1] for a, b in linked for x, y in ((a, b), (b, a))
                  if members[x][0] == "train" and members[y][0] in ("validation", "test")}
    report["cross_split"] = {"train_indices": sorted(train_dups), "count": len(train_dups)}
    return report


def attach_load_report(report: dict[str, Any], domain: object) -> dict[str, Any]:
    """Add the domain's ``load_report`` (``quarantined`` files, ``dropped`` counts) to ``report``."""
    extra = getattr(domain, "load_report", None) or {}
    report["quarantined"] = list(extra.get("quarantined", []))
    report["dropped"] = dict(extra.get("dropped", {}))
    if "groups" in extra:  # own-data domains with a group key: distinct groups per split
        report["groups"] = dict(extra["groups"])
    return report


def drop_cross_split_duplicates(dd: DatasetDict, report: dict[str, Any]) -> tuple[DatasetDict, int]:
    """Remove from ``train`` the items the audit found duplicating a validation/test item.

    Validation and test are returned untouched. Returns the new ``DatasetDict`` and the number removed.
    Raises ``ValueError`` when ``report`` was computed on different splits (sizes disagree).
    """
    for split, size in report["sizes"].items():
        if split not in dd or len(dd[split]) != size:
            have = len(dd[split]) if split in dd else "missing"
            raise ValueError(f"audit report is stale: split '{split}' had {size} items, now {have}")
    drop = set(report["cross_split"]["train_indices"])
    if not drop:
        return dd, 0
    keep = [i for i in range(len(dd["train"])) if i not in drop]
    out = DatasetDict(dd)
    out["train"] = dd["train"].select(keep)
    return out, len(drop)

