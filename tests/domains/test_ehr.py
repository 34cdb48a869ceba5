"""ehr: IU report label/text derivation, MTSamples specialty filter, empty and ambiguous notes."""

from __future__ import annotations

import csv
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

import domains.ehr as ehr
from shared.data.sources import SourceError

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{id}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">Chest radiograph on XXXX.</AbstractText>
            <AbstractText Label="INDICATION">XXXX yr old with dyspnea.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      {mesh}
   </MeSH>
   <parentImage id="CXR{id}_IM-0001-1001"><caption>Chest PA and lateral.</caption></parentImage>
</eCitation>
"""


def write_report(folder: Path, rid: int, findings: str, impression: str, majors: list[str]) -> None:
    mesh = "\n      ".join([f"<major>{m}</major>" for m in majors] + ["<automatic>Lung</automatic>"])
    text = REPORT.format(id=rid, findings=findings, impression=impression, mesh=mesh)
    (folder / f"{rid}.xml").write_text(text)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    write_report(folder, 1, "The heart is normal in size. The lungs are clear.", "No acute disease.",
                 ["normal"])
    write_report(folder, 2, "Heart size normal. Small left pleural effusion.", "Left effusion.",
                 ["Pleural Effusion/left/small"])
    write_report(folder, 3, "Normal heart.", "Degenerative spine.",
                 ["Spine/degenerative", "Lung/hypoinflation"])
    write_report(folder, 4, "", "", ["normal"])  # empty findings + impression -> dropped, counted
    write_report(folder, 10, "Clear  lungs.\n  No effusion.", "", ["Normal"])
    return folder


def test_iu_label_and_text_rules(reports: Path) -> None:
    texts, labels, dropped = ehr.read_iu_reports(reports, expected=None)
    assert labels == ["normal", "abnormal", "abnormal", "normal"]
    assert texts[0] == "The heart is normal in size. The lungs are clear. No acute disease."
    assert texts[3] == "Clear lungs. No effusion."  # whitespace collapsed, empty impression skipped
    assert dropped == {"empty_text": 1}
    joined = " ".join(texts)
    for leaked in ("Pleural Effusion/left/small", "Spine/degenerative", "XXXX", "Chest PA"):
        assert leaked not in joined  # no MeSH, indication, comparison or caption in the text


def test_iu_report_without_major_mesh_raises(tmp_path: Path) -> None:
    write_report(tmp_path, 7, "Clear.", "Normal.", [])
    with pytest.raises(SourceError, match="7.xml"):
        ehr.parse_report(tmp_path / "7.xml")


def test_iu_fetch_from_mirror_and_split(reports: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for rid in range(20, 36):
        mesh = ["normal"] if rid % 2 else ["Cardiomegaly"]
        write_report(reports, rid, f"Finding {rid}.", "Impression.", mesh)
    (tmp_path / "mirror" / "iu_reports").mkdir(parents=True)
    with tarfile.open(tmp_path / "mirror" / "iu_reports" / "NLMCXR_reports.tgz", "w:gz") as tar:
        tar.add(reports, arcname="ecgen-radiology")
    monkeypatch.setenv("TRANSFERLAB_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setattr(ehr, "IU_REPORTS", 21)
    domain = ehr.Ehr(ehr.EhrParams())
    domain.fetch(tmp_path / "raw")
    dd = domain.load_splits(tmp_path / "raw")
    assert len(dd["train"]) + len(dd["test"]) == 20 and len(dd["test"]) == 4
    assert dd["test"].features["label"].names == ["normal", "abnormal"]
    assert domain.load_report["dropped"] == {"empty_text": 1}
    assert domain.task == "binary" and domain.primary_metric == "auroc"


def write_csv(path: Path) -> Path:
    rows = [
        ("Cardiovascular / Pulmonary", "Chest pain, echo shows reduced ejection fraction."),
        ("Cardiovascular / Pulmonary", "Dyspnea; CT angiogram negative."),
        ("Cardiovascular / Pulmonary", ""),  # empty -> dropped
        ("Orthopedic", "Right knee arthroscopy, medial meniscus tear."),
        ("Orthopedic", "Hip fracture, ORIF performed."),
        ("Surgery", "Hip fracture, ORIF performed."),  # same note under a non-selected specialty: fine
        ("Neurology", "Headache and   seizures."),
        ("Orthopedic", "headache and seizures."),  # same note under two selected -> both ambiguous
        ("Neurology", "MRI brain: small vessel disease."),
        ("Neurology", "MRI  brain: small vessel disease."),  # repeat, same specialty -> kept once
        ("Letters", "Dear doctor, thank you for the referral."),
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "description", "medical_specialty", "sample_name", "transcription", "keywords"])
        for i, (spec, text) in enumerate(rows):
            writer.writerow([i, "desc", f" {spec}", "name", text, spec.lower()])
    return path


def test_mtsamples_specialty_filter_and_drop_counts(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mtsamples.csv")
    specialties = ["Cardiovascular / Pulmonary", "Orthopedic", "Neurology"]
    texts, labels, dropped = ehr.read_mtsamples(path, specialties)
    assert sorted(zip(labels, texts, strict=True)) == [
        ("Cardiovascular / Pulmonary", "Chest pain, echo shows reduced ejection fraction."),
        ("Cardiovascular / Pulmonary", "Dyspnea; CT angiogram negative."),
        ("Neurology", "MRI brain: small vessel disease."),
        ("Orthopedic", "Hip fracture, ORIF performed."),
        ("Orthopedic", "Right knee arthroscopy, medial meniscus tear."),
    ]
    assert dropped == {"empty_text": 1, "ambiguous_specialty": 2, "duplicate_text": 1}
    with pytest.raises(SourceError, match="Cardiology"):
        ehr.read_mtsamples(path, ["Cardiology", "Neurology"])


def test_mtsamples_domain_is_multiclass(tmp_path: Path) -> None:
    write_csv(tmp_path / "mtsamples.csv")
    data = {"dataset": "mtsamples", "specialties": ["Cardiovascular / Pulmonary", "Orthopedic"],
            "test_fraction": 0.4}
    params = ehr.EhrParams.model_validate({"data": data})
    domain = ehr.Ehr(params)
    dd = domain.load_splits(tmp_path)
    assert domain.task == "multiclass" and domain.primary_metric == "macro_f1"
    assert dd["train"].features["label"].names == ["Cardiovascular / Pulmonary", "Orthopedic"]
    assert len(dd["train"]) == 3 and len(dd["test"]) == 2


@pytest.mark.skipif(not os.environ.get("TRANSFERLAB_MIRROR"), reason="needs TRANSFERLAB_MIRROR")
@pytest.mark.parametrize(("dataset", "counts", "dropped"), [
    ("iu_reports", [1363, 2564], {"empty_text": 28}),
    ("mtsamples", [365, 319, 215, 185, 152, 150],
     {"empty_text": 14, "ambiguous_specialty": 98, "duplicate_text": 0}),
])
def test_real_counts(tmp_path: Path, dataset: str, counts: list[int], dropped: dict[str, int]) -> None:
    domain = ehr.Ehr(ehr.EhrParams.model_validate({"data": {"dataset": dataset}}))
    domain.fetch(tmp_path)
    dd = domain.load_splits(tmp_path)
    labels = np.concatenate([dd["train"]["label"], dd["test"]["label"]])
    assert np.bincount(labels).tolist() == counts
    assert domain.load_report["dropped"] == dropped
