"""Small generated image folders and tables for the own-data domains' tests (``domains/own``).

Images are 16x16 PNGs whose colour depends on the class, so a frozen probe can learn them; several images
share a patient id (in ``metadata.csv`` and in the file name) so group-disjoint splits can be checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog")


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    base = np.full((16, 16, 3), 60 + 120 * label, dtype=np.int16)
    noise = rng.integers(-40, 40, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, *, layout: Literal["flat", "splits"] = "flat", patients: int = 12,
                      per_patient: int = 3, metadata: bool = True, seed: int = 0) -> Path:
    """``root/<class>/<patient>_<k>.png`` (``flat``) or ``root/{train,test}/<class>/...`` (``splits``: the
    last quarter of the patients in test). Each patient has one class and ``per_patient`` images;
    ``metadata.csv`` (``file_name,patient``; one per split folder, as ``datasets`` expects) when ``metadata``."""
    rng = np.random.default_rng(seed)
    rows: dict[Path, list[str]] = {}
    for p in range(patients):
        label = p % len(CLASSES)
        split = ("test" if p >= patients * 3 // 4 else "train") if layout == "splits" else ""
        folder = root / split / CLASSES[label] if split else root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_patient):
            file = folder / f"p{p:03d}_{k}.png"
            _image(rng, label).save(file)
            base = root / split if split else root  # datasets' convention: one metadata.csv per split folder
            rows.setdefault(base, ["file_name,patient"]).append(f"{file.relative_to(base).as_posix()},p{p:03d}")
    if metadata:
        for base, lines in rows.items():
            (base / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def table_rows(n: int = 60, *, seed: int = 0, classes: tuple[str, ...] = ("cardiology", "neurology", "urology")
               ) -> dict[str, list[str]]:
    """Columns ``note``, ``specialty`` and ``patient_id`` (two notes per patient): words tied to the class."""
    rng = np.random.default_rng(seed)
    vocab = {c: [f"{c[:4]}{i}" for i in range(5)] for c in classes}
    notes, labels, patients = [], [], []
    for i in range(n):
        c = classes[(i // 2) % len(classes)]
        words = list(rng.choice(vocab[c], size=6)) + list(rng.choice(["patient", "seen", "today", "plan"], 3))
        notes.append(" ".join(words))
        labels.append(c)
        patients.append(f"pt{i // 2:03d}")
    return {"note": notes, "specialty": labels, "patient_id": patients}


def make_table(path: Path, fmt: Literal["csv", "jsonl", "parquet"], n: int = 60, seed: int = 0) -> Path:
    """:func:`table_rows` written as CSV, JSON Lines or Parquet."""
    import pandas as pd

    frame = pd.DataFrame(table_rows(n, seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path
