"""nlp: the SST-2 reader names the file and line of a bad row, drops and counts empty sentences, and the
zip fallback's errors name the URL, not fetch's staging folder."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

import domains.nlp as nlp
from shared.data.sources import SourceError

HEADER = "sentence\tlabel\n"
GOOD = ["a wonderful film \t1\n", "a dull mess \t0\n", "great acting \t1\n", "awful plot \t0\n"]


def write_raw(folder: Path, train_rows: list[str], dev_rows: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(HEADER + "".join(train_rows), encoding="utf-8")
    (folder / "dev.tsv").write_text(HEADER + "".join(dev_rows if dev_rows is not None else GOOD), encoding="utf-8")
    return folder


def sst2() -> nlp.Nlp:
    return nlp.Nlp(nlp.NlpParams())


def test_sst2_reads_sentences_and_labels(tmp_path: Path) -> None:
    texts, labels, dropped = nlp.read_tsv(write_raw(tmp_path, GOOD) / "train.tsv")
    assert texts == ["a wonderful film", "a dull mess", "great acting", "awful plot"]
    assert labels == [1, 0, 1, 0] and dropped == {}


@pytest.mark.parametrize(("row", "problem"), [
    ("a fine film\tpos\n", "label must be 0 or 1, got 'pos'"),
    ("a fine film\t1.0\n", "label must be 0 or 1, got '1.0'"),
    ("a fine film with no label\n", "expected 2 tab-separated fields (sentence, label), got 1"),
    ("a fine\tfilm\t1\n", "expected 2 tab-separated fields (sentence, label), got 3"),
])
def test_sst2_bad_row_names_file_and_line(tmp_path: Path, row: str, problem: str) -> None:
    raw = write_raw(tmp_path / "raw", GOOD[:2] + [row] + GOOD[2:])
    with pytest.raises(SourceError) as info:
        sst2().load_splits(raw)
    assert str(info.value).startswith(f"{raw / 'train.tsv'}:4: {problem}")  # header, 2 good rows, then it


def test_sst2_bad_header_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(SourceError, match=r"train\.tsv:1: expected columns \['sentence', 'label'\]"):
        nlp.read_tsv(path)


def test_sst2_empty_sentences_are_dropped_and_counted(tmp_path: Path) -> None:
    raw = write_raw(tmp_path, GOOD + ["\t1\n", "   \t0\n"], GOOD + ["\t0\n"])
    domain = sst2()
    dd = domain.load_splits(raw)
    assert len(dd["train"]) == 4 and len(dd["test"]) == 4
    assert "" not in list(dd["train"]["text"]) + list(dd["test"]["text"])
    assert domain.load_report == {"quarantined": [], "dropped": {"empty_text": 3}}  # train 2 + dev 1


def test_sst2_zip_fallback_errors_name_the_url_not_the_staging_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import fetch

    archive = tmp_path / "SST-2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SST-2/train.tsv", HEADER + "".join(GOOD))  # not GLUE's bytes: the checksum fails
        zf.writestr("SST-2/dev.tsv", HEADER + "".join(GOOD))
    url = archive.as_uri()
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("domains: [nlp]\nregimes: [frozen]\nnlp: {data: {dataset: sst2}}\n")
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
    monkeypatch.delenv("TRANSFERLAB_MIRROR", raising=False)
    monkeypatch.setattr(nlp, "SST2_ZIP_URL", url)
    with pytest.raises(SourceError) as info:
        fetch.main(["--domain", "nlp"])
    actual = hashlib.sha256((HEADER + "".join(GOOD)).encode()).hexdigest()
    assert f"{url}: member SST-2/train.tsv: sha256 mismatch: expected {nlp.SST2_FILES['train.tsv']}, " \
           f"got {actual}" in str(info.value)
    assert "staging" not in str(info.value)
    assert sorted(p.name for p in (root / "data" / "raw").iterdir()) == []  # the staging folder is gone
