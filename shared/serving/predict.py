"""``transferlab predict``: score files, folders, a table column or stdin lines with a logged model.

Inputs (:func:`read_inputs`), per argument: ``-`` reads stdin, one item per line (a text, or an image
path); a folder gives its files (images: by extension; text: ``*.txt``, one item per file), sorted; a
``.csv`` / ``.jsonl`` table gives its ``--column`` (default: the model's input column; image paths relative
to the table's folder); any other file is one item (an image, or a text file). Every item keeps an ``id``
(path, ``table:row`` or ``stdin:line``). An unreadable item becomes an error row and the others go on.

The output (:func:`predict_items`) has one row per item: ``id``, one ``prob_<class>`` column per class,
``label`` and ``error`` (empty when it was scored).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".dcm"}
TABLE_SUFFIXES = {".csv", ".jsonl"}


@dataclass
class Item:
    """One input: its id, its value (image bytes or a text; ``None`` when unreadable) and why not."""

    id: str
    value: bytes | str | None
    error: str = ""


def _image_item(path: Path, label: str | None = None) -> Item:
    try:
        return Item(label or str(path), path.read_bytes())
    except OSError as err:
        return Item(label or str(path), None, f"cannot read {path}: {err.strerror or err}")


def _text_file(path: Path) -> Item:
    try:
        return Item(str(path), path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError) as err:
        return Item(str(path), None, f"cannot read {path} as UTF-8 text: {err}")


def _table_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON object: {err}") from None
    return rows


def _table(path: Path, column: str, modality: str) -> list[Item]:
    rows = _table_rows(path)
    if rows and column not in rows[0]:
        raise ValueError(f"{path} has no column '{column}' (columns: {sorted(rows[0])}); pass --column")
    items = []
    for n, row in enumerate(rows, start=1):
        label, value = f"{path}:{n}", row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            items.append(Item(label, None, f"column '{column}' is empty"))
        elif modality == "image":
            file = Path(str(value))
            items.append(_image_item(file if file.is_absolute() else path.parent / file, label))
        else:
            items.append(Item(label, str(value)))
    return items


def read_inputs(inputs: Sequence[str], modality: str, column: str | None = None,
                stdin: Iterable[str] | None = None) -> list[Item]:
    """The items of ``inputs`` (see the module docstring); a missing path is an error row, not a stop."""
    column = column or modality
    items: list[Item] = []
    for arg in inputs:
        if arg == "-":
            lines = [line.rstrip("\n") for line in (stdin if stdin is not None else sys.stdin)]
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                items.append(_image_item(Path(line), f"stdin:{n}") if modality == "image"
                             else Item(f"stdin:{n}", line))
            continue
        path = Path(arg)
        if path.is_dir():
            wanted = IMAGE_SUFFIXES if modality == "image" else {".txt"}
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
            if not files:
                items.append(Item(str(path), None, f"no {'image' if modality == 'image' else '.txt'} files in "
                                                   f"{path}"))
            items.extend(_image_item(f) if modality == "image" else _text_file(f) for f in files)
        elif not path.exists():
            items.append(Item(str(path), None, f"{path}: no such file or folder"))
        elif path.suffix.lower() in TABLE_SUFFIXES:
            items.extend(_table(path, column, modality))
        elif modality == "image":
            items.append(_image_item(path))
        else:
            items.append(_text_file(path))
    return items


def predict_items(model: Any, items: Sequence[Item], column: str, batch_size: int = 32,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Score ``items`` with a pyfunc ``model`` in batches; a batch that fails is retried item by item, so
    one bad input costs one error row. One output row per item, in order."""
    import pandas as pd
    from tqdm import tqdm

    rows: list[dict[str, Any] | None] = [None] * len(items)
    for i, item in enumerate(items):
        if item.value is None:
            rows[i] = {"id": item.id, "error": item.error}
    todo = [i for i, row in enumerate(rows) if row is None]

    def score(indices: list[int]) -> Any:
        return model.predict(pd.DataFrame({column: [items[i].value for i in indices]}))

    with tqdm(total=len(todo), desc="predict", unit="item", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            try:
                outs = [(chunk, score(chunk))]
            except Exception:  # noqa: BLE001 - isolate the bad item(s); each error is reported below
                outs = []
                for i in chunk:
                    try:
                        outs.append(([i], score([i])))
                    except Exception as err:  # noqa: BLE001 - one bad item: an error row, the rest go on
                        rows[i] = {"id": items[i].id, "error": str(err).splitlines()[0][:500]}
            for indices, frame in outs:
                for i, record in zip(indices, frame.to_dict("records"), strict=True):
                    rows[i] = {"id": items[i].id, **record, "error": ""}
            bar.update(len(chunk))
    return [row for row in rows if row is not None]


def write_predictions(rows: Sequence[dict[str, Any]], out: Any) -> None:
    """CSV: ``id``, the probability columns, ``label``, ``error`` (columns of every row, in that order)."""
    columns = ["id"]
    for row in rows:
        columns.extend(k for k in row if k not in columns and k not in ("label", "error"))
    columns += ["label", "error"]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
