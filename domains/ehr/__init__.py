"""EHR text: Indiana University chest X-ray reports (normal vs abnormal) or MTSamples specialties.

``iu_reports`` (default; binary, positive = abnormal). Source: ``NLMCXR_reports.tgz`` (3955 XML reports,
``ecgen-radiology/<id>.xml``) from the mirror (``iu_reports/NLMCXR_reports.tgz``), else the copy inside
the ``torchxrayvision`` package (located with ``importlib.util.find_spec``, never imported: it is
installed with ``--no-deps``), else Open-i. It is checked by content (3955 reports). Rules:

- text = the FINDINGS section, a space, then the IMPRESSION section (``AbstractText`` elements with
  those labels; whitespace collapsed). COMPARISON, INDICATION, the MeSH terms and image captions are not
  part of the text, so the label source never leaks into the input.
- label = ``normal`` when the report's ``MeSH/major`` terms are exactly one term equal (case-insensitive)
  to ``normal``; otherwise ``abnormal``. A report without any major MeSH term raises. (Measured: 1391
  normal / 2564 abnormal; no report mixes ``normal`` with another major term.)
- a report whose findings and impression are both empty is dropped and counted in
  ``load_report["dropped"]["empty_text"]`` (measured: 28, all tagged normal -> 1363 / 2564 remain).

``mtsamples`` (multiclass over ``data.specialties``). Source: ``mtsamples/mtsamples.csv`` from the mirror.
Text = the ``transcription`` column only (``keywords``/``description`` often name the specialty).
Rows of other specialties are ignored; empty transcriptions are dropped (``empty_text``). MTSamples lists
many notes under several specialties (e.g. an operative note under both "Surgery" and "Orthopedic"): a
note whose normalised text (:func:`shared.data.audit.normalize_text`) appears under more than one selected
specialty has no single label and is dropped (``ambiguous_specialty``, counted per row); a note repeated
under the same specialty is kept once (``duplicate_text``). The default list is the organ-system
specialties with >= 100 non-empty notes; left out are note-type categories ("Consult - History and Phy.",
"SOAP / Chart / Progress Notes", "Discharge Summary", "General Medicine", "Office Notes", "Letters",
"Emergency Room Reports") and the cross-cutting "Surgery" and "Radiology", whose notes are nearly all
also filed under an organ specialty (with them, 74% of the selected rows would be ambiguous).

Both datasets have no official test split: a stratified test split (``data.test_fraction``, 20%) is
drawn with the fixed seed ``SPLIT_SEED`` so the test set is the same for every experiment seed;
validation is then derived from train by ``prepare``.

Long notes: the tokenizer truncates at ``model.max_length`` tokens keeping the head of the note (the
first tokens; MTSamples notes open with the chief complaint / procedure, which carries the specialty).
IU reports (~40-80 words) fit in 256 tokens; MTSamples notes (median ~400 words) are truncated.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from datasets import DatasetDict
from pydantic import Field

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.audit import normalize_text
from shared.data.domain import Domain, Task
from shared.data.sources import RemoteFile, SourceError, package_file, resolve
from shared.data.splits import build_label_map, make_split
from shared.files.safe import safe_extract

IU_ARCHIVE = "NLMCXR_reports.tgz"
IU_REMOTE = RemoteFile(mirror_path=f"iu_reports/{IU_ARCHIVE}",
                       url="https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
                       mirror_exact=False)  # no published checksum: checked by content (report count)
IU_DIR = "ecgen-radiology"
IU_REPORTS = 3955
IU_CLASSES = ["normal", "abnormal"]
TEXT_SECTIONS = ("FINDINGS", "IMPRESSION")
MTSAMPLES = RemoteFile(mirror_path="mtsamples/mtsamples.csv")
MTSAMPLES_FILE = "mtsamples.csv"
MTSAMPLES_COLUMNS = ["", "description", "medical_specialty", "sample_name", "transcription", "keywords"]
DEFAULT_SPECIALTIES = ["Cardiovascular / Pulmonary", "Orthopedic", "Gastroenterology", "Neurology",
                       "Obstetrics / Gynecology", "Urology"]
SPLIT_SEED = 0


class EhrData(DataParams):
    """Data keys of the ehr domain."""

    dataset: Literal["iu_reports", "mtsamples"] = "iu_reports"
    specialties: list[str] = Field(default_factory=lambda: list(DEFAULT_SPECIALTIES), min_length=2)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)


class EhrParams(DomainParams):
    """params.yaml section ``ehr``."""

    data: EhrData = EhrData()
    model: ModelParams = ModelParams(backbone="sentence-transformers/all-MiniLM-L6-v2", max_length=256)


def torchxrayvision_reports() -> Path | None:
    """``NLMCXR_reports.tgz`` inside the installed ``torchxrayvision`` package (not imported), or None."""
    return package_file("torchxrayvision", "data", IU_ARCHIVE)


def parse_report(path: Path) -> tuple[str, str]:
    """``(text, label)`` of one IU XML report (see the module docstring for the rules)."""
    root = ET.parse(path).getroot()
    sections = {el.get("Label", "").upper(): " ".join((el.text or "").split())
                for el in root.iter("AbstractText")}
    text = " ".join(sections[s] for s in TEXT_SECTIONS if sections.get(s)).strip()
    majors = [(el.text or "").strip() for el in root.findall("./MeSH/major")]
    if not any(majors):
        raise SourceError(f"{path}: no MeSH/major term; cannot derive the normal/abnormal label")
    label = "normal" if len(majors) == 1 and majors[0].casefold() == "normal" else "abnormal"
    return text, label


def read_iu_reports(folder: Path, expected: int | None = None
                    ) -> tuple[list[str], list[str], Counter[str]]:
    """Texts and labels of every report in ``folder`` (sorted by report id) and the drop counts.

    ``expected``: the number of XML reports the folder must hold (None: not checked)."""
    files = sorted(folder.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if expected is not None and len(files) != expected:
        raise SourceError(f"{folder}: {len(files)} XML reports, expected {expected}")
    texts, labels, dropped = [], [], Counter[str]()
    for path in files:
        text, label = parse_report(path)
        if not text:
            dropped["empty_text"] += 1
            continue
        texts.append(text)
        labels.append(label)
    return texts, labels, dropped


def read_mtsamples(path: Path, specialties: list[str]) -> tuple[list[str], list[str], Counter[str]]:
    """Texts and specialty labels of the selected specialties (rules in the module docstring)."""
    import pandas as pd

    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if header != MTSAMPLES_COLUMNS:
        raise SourceError(f"{path}: columns {header}, expected {MTSAMPLES_COLUMNS}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["medical_specialty"] = frame["medical_specialty"].str.strip()
    unknown = sorted(set(specialties) - set(frame["medical_specialty"]))
    if unknown:
        raise SourceError(f"{path}: data.specialties {unknown} not in the file; available: "
                          f"{sorted(set(frame['medical_specialty']))}")
    rows = frame[frame["medical_specialty"].isin(specialties)]
    dropped = Counter[str]()
    by_text: dict[str, list[tuple[str, str]]] = {}
    for text, specialty in zip(rows["transcription"], rows["medical_specialty"], strict=True):
        key = normalize_text(text)
        if not key:
            dropped["empty_text"] += 1
            continue
        by_text.setdefault(key, []).append((text.strip(), specialty))
    texts, labels = [], []
    for copies in by_text.values():
        if len({s for _, s in copies}) > 1:
            dropped["ambiguous_specialty"] += len(copies)
            continue
        dropped["duplicate_text"] += len(copies) - 1
        texts.append(copies[0][0])
        labels.append(copies[0][1])
    return texts, labels, dropped


class Ehr(Domain[EhrParams]):
    """Clinical text. ``iu_reports``: binary (abnormal positive, AUROC); ``mtsamples``: multiclass
    (macro-F1): :meth:`task_for` sets ``task`` and ``primary_metric`` per instance from ``data.dataset``
    (the class attributes describe the default dataset).

    After :meth:`load_splits`, ``self.load_report = {"quarantined": [], "dropped": {reason: count}}``
    for ``shared.data.audit.attach_load_report``.
    """

    name: ClassVar[str] = "ehr"
    modality: ClassVar[Literal["text"]] = "text"
    task: Task = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("iu_reports", "mtsamples")
    Params = EhrParams
    primary_metric: str = "auroc"

    def __init__(self, params: EhrParams) -> None:
        super().__init__(params)
        self.load_report: dict[str, Any] = {"quarantined": [], "dropped": {}}

    @classmethod
    def task_for(cls, params: EhrParams) -> tuple[Task, str]:
        """IU reports: binary, AUROC; MTSamples: multiclass, macro-F1."""
        return ("multiclass", "macro_f1") if params.data.dataset == "mtsamples" else ("binary", "auroc")

    def fetch(self, raw_dir: Path) -> None:
        """IU: resolve the ``.tgz`` (mirror -> torchxrayvision -> Open-i), extract it safely, count the
        reports. MTSamples: copy the mirror CSV."""
        raw_dir.mkdir(parents=True, exist_ok=True)
        if self.params.data.dataset == "mtsamples":
            resolve(MTSAMPLES, raw_dir / MTSAMPLES_FILE)
            return
        archive = resolve(IU_REMOTE, raw_dir / IU_ARCHIVE, package=torchxrayvision_reports)
        safe_extract(archive, raw_dir)
        archive.unlink()
        count = len(list((raw_dir / IU_DIR).glob("*.xml")))
        if count != IU_REPORTS:
            raise SourceError(f"{raw_dir / IU_DIR}: {count} XML reports, expected {IU_REPORTS}")

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """Train and a seeded stratified test split (``data.test_fraction``)."""
        data = self.params.data
        if data.dataset == "mtsamples":
            source = raw_dir / MTSAMPLES_FILE
            texts, labels, dropped = read_mtsamples(source, data.specialties)
            label_map = build_label_map(data.specialties)
        else:
            source = raw_dir / IU_DIR
            texts, labels, dropped = read_iu_reports(source, IU_REPORTS)
            label_map = build_label_map(IU_CLASSES)
        self.load_report = {"quarantined": [], "dropped": dict(dropped)}
        full = make_split(texts, labels, label_map, modality="text", source=str(source))
        parts = full.train_test_split(test_size=data.test_fraction, stratify_by_column="label",
                                      seed=SPLIT_SEED)
        return DatasetDict(train=parts["train"], test=parts["test"])
