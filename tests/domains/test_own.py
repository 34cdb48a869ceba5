"""Own data as a domain (domains/own): image folders and CSV / JSONL / Parquet tables through a params
section alone, group-disjoint splits, clear errors on bad input, and ``transferlab add``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasets import DatasetDict

from domains.own import OwnDomain
from domains.own.add import add_domain
from shared.config import ParamsError, parse_params
from shared.data.images import BadImageError
from shared.data.sources import SourceError
from shared.data.splits import LabelMapError, finalize_splits
from shared.evaluation.metrics import DegenerateDataError
from shared.testing.own_data import make_image_folder, make_table

NOTE = {"text_column": "note", "label_column": "specialty"}


@pytest.fixture(autouse=True)
def project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative data paths resolve from the project root: a temporary one."""
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    return tmp_path


def own(name: str, data: dict[str, Any], **section: Any) -> OwnDomain:
    params = parse_params({"domains": [name], "regimes": ["frozen"], name: {"data": data, **section}})
    domain = params.domain_class(name)(params.domain(name))
    assert isinstance(domain, OwnDomain) and domain.name == name
    return domain


def load(domain: OwnDomain, tmp_path: Path) -> DatasetDict:
    domain.fetch(tmp_path / "raw" / domain.name)
    return finalize_splits(domain.load_splits(tmp_path / "raw" / domain.name), domain.params.data, 0)


@pytest.mark.parametrize("layout", ["flat", "splits"])
def test_an_image_folder_is_a_domain_from_its_params_section_alone(tmp_path: Path, layout: str) -> None:
    make_image_folder(tmp_path / "skin", layout=layout, patients=24)  # type: ignore[arg-type]
    domain = own("skin", {"format": "imagefolder", "path": "skin", "group_column": "patient",
                          "validation_fraction": 0.25})
    assert (domain.modality, domain.task, domain.primary_metric) == ("image", "binary", "auroc")
    assert domain.params.model.backbone == "tf_efficientnet_lite0"  # defaults as for the built-in domains
    dd = load(domain, tmp_path)
    assert dd["train"].features["label"].names == ["cat", "dog"]
    assert sum(len(dd[s]) for s in dd) == 24 * 3
    if layout == "splits":  # the given test split is kept whole: the last quarter of the patients
        assert len(dd["test"]) == 6 * 3
    assert domain.load_report["groups"]["test"] >= 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_table_is_a_domain_with_the_task_from_its_labels(tmp_path: Path, fmt: str) -> None:
    make_table(tmp_path / f"notes.{fmt}", fmt)  # type: ignore[arg-type]
    domain = own("notes", {"format": fmt, "path": f"notes.{fmt}", **NOTE})
    assert (domain.modality, domain.task, domain.primary_metric) == ("text", "multiclass", "accuracy")
    dd = load(domain, tmp_path)
    assert dd["train"].features["label"].names == ["cardiology", "neurology", "urology"]
    assert sum(len(dd[s]) for s in dd) == 60 and set(dd["train"].column_names) == {"text", "label"}
    assert own("notes2", {"format": fmt, "path": f"notes.{fmt}", **NOTE},
               evaluate={"primary_metric": "macro_f1"}).primary_metric == "macro_f1"


def _split_groups(domain: OwnDomain, tmp_path: Path) -> dict[str, set[str]]:
    """Each split's patients, matched back by note text (every generated note is unique)."""
    dd = load(domain, tmp_path)
    import pandas as pd

    table = pd.read_csv(tmp_path / "notes.csv")
    patient = dict(zip(table["note"], table["patient_id"], strict=True))
    return {s: {patient[t] for t in dd[s]["text"]} for s in dd}


def test_a_group_key_keeps_every_patient_in_one_split_and_without_it_they_leak(tmp_path: Path) -> None:
    make_table(tmp_path / "notes.csv", "csv", n=120)
    grouped = _split_groups(own("g", {"format": "csv", "path": "notes.csv", "group_column": "patient_id",
                                       **NOTE}), tmp_path)
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not grouped[a] & grouped[b], f"patients in {a} and {b}: {grouped[a] & grouped[b]}"
    # the same data without the key: two notes per patient fall on both sides (the check above can fail)
    plain = _split_groups(own("p", {"format": "csv", "path": "notes.csv", **NOTE}), tmp_path)
    assert plain["train"] & (plain["test"] | plain["validation"])


def test_group_pattern_over_file_names_and_given_splits_sharing_a_patient_fail(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "xr", layout="splits", patients=24, metadata=False)
    domain = own("xr", {"format": "imagefolder", "path": "xr", "group_pattern": r"^(p\d+)_",
                        "validation_fraction": 0.25})
    load(domain, tmp_path)
    moved = next((root / "train" / "cat").iterdir())  # one image of a train patient now also in test
    moved.rename(root / "test" / "cat" / moved.name)
    with pytest.raises(DegenerateDataError, match=r"appear in both train and test"):
        domain.load_splits(tmp_path / "raw" / "xr")


def test_a_split_column_is_kept(tmp_path: Path) -> None:
    import pandas as pd

    make_table(tmp_path / "t.csv", "csv", n=60)
    frame = pd.read_csv(tmp_path / "t.csv")
    frame["part"] = ["test" if i % 4 == 0 else "train" for i in range(60)]
    frame.to_csv(tmp_path / "t.csv", index=False)
    dd = load(own("t", {"format": "csv", "path": "t.csv", "split_column": "part", **NOTE}), tmp_path)
    assert len(dd["test"]) == 15 and len(dd["train"]) + len(dd["validation"]) == 45


def test_unknown_sections_and_formats_are_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['skinn'\].*your own data"):
        parse_params({"domains": ["vision"], "regimes": ["frozen"], "skinn": {"data": {"path": "x"}}})
    with pytest.raises(ParamsError, match=r"no registered domain reads data.format 'tiff'.*imagefolder"):
        parse_params({"domains": ["s"], "regimes": ["frozen"], "s": {"data": {"format": "tiff", "path": "x"}}})


@pytest.mark.parametrize(("write", "data", "error", "match"), [
    (None, {"path": "missing.csv"}, SourceError, r"missing.csv.*no such file"),
    ("notes", {"path": "t.csv", "text_column": "body", "label_column": "specialty"}, SourceError,
     r"no column\(s\) \['body'\]; columns: \['note', 'specialty', 'patient_id'\]"),
    ("".join(["text,label\n"] + [f"w{i},{i * 0.37:.2f}\n" for i in range(40)]), {"path": "t.csv"}, LabelMapError,
     r"look continuous"),
    ("text,label\n" + "a,x\n" * 5, {"path": "t.csv"}, DegenerateDataError, r"single class \['x'\]"),
    ("text,label\n" + "a,x\n" * 5 + "b,y\nc,y\n", {"path": "t.csv"}, DegenerateDataError,
     r"fewer than 3 items: \{'y': 2\}"),
    ("text,label\n" + ",x\n" * 6 + "a,y\nb,y\nc,y\nd,x\n", {"path": "t.csv"}, SourceError, r"mostly empty"),
])
def test_bad_tables_fail_naming_the_file_column_or_value(tmp_path: Path, write: str | None, data: dict[str, Any],
                                                         error: type[Exception], match: str) -> None:
    if write == "notes":
        make_table(tmp_path / "t.csv", "csv")
    elif write is not None:
        (tmp_path / "t.csv").write_text(write)
    with pytest.raises(error, match=match):
        load(own("bad", {"format": "csv", **data}), tmp_path)


def test_mixed_label_types_are_named(tmp_path: Path) -> None:
    import json

    rows = [json.dumps({"text": f"t{i}", "label": 1 if i % 2 else "x"}) for i in range(8)]
    (tmp_path / "t.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(LabelMapError, match=r"t.jsonl: mixed label types \['int', 'str'\]"):
        own("m", {"format": "jsonl", "path": "t.jsonl"})


def test_non_utf8_text_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"text,label\n" + b"a,x\n" * 4 + b"caf\xe9,y\n" + b"b,y\n" * 4)
    with pytest.raises(SourceError, match=r"t.csv:6: not UTF-8"):
        load(own("bad", {"format": "csv", "path": "t.csv"}), tmp_path)


def test_empty_texts_are_dropped_and_counted(tmp_path: Path) -> None:
    make_table(tmp_path / "t.csv", "csv")
    import pandas as pd

    frame = pd.read_csv(tmp_path / "t.csv")
    frame.loc[[0, 5], "note"] = ""
    frame.to_csv(tmp_path / "t.csv", index=False)
    domain = own("t", {"format": "csv", "path": "t.csv", **NOTE})
    dd = load(domain, tmp_path)
    assert sum(len(dd[s]) for s in dd) == 58 and domain.load_report["dropped"] == {"empty_text": 2}


@pytest.mark.parametrize("policy", ["fail", "quarantine"])
def test_bad_images_fail_or_are_quarantined_and_counted(tmp_path: Path, policy: str) -> None:
    root = make_image_folder(tmp_path / "im", patients=24, metadata=False)
    bad = root / "cat" / "p000_0.png"
    bad.write_bytes(b"not a png at all")
    domain = own("im", {"format": "imagefolder", "path": "im", "bad_images": policy, "validation_fraction": 0.25})
    if policy == "fail":
        with pytest.raises(BadImageError, match="p000_0.png"):
            load(domain, tmp_path)
        return
    dd = load(domain, tmp_path)
    assert sum(len(dd[s]) for s in dd) == 24 * 3 - 1
    assert domain.load_report["dropped"] == {"bad_image": 1}
    assert domain.load_report["quarantined"][0]["file"].endswith("p000_0.png")


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no class folders"):
        own("e", {"format": "imagefolder", "path": "empty"})


def test_max_train_samples_subsamples_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import domains.own as own_module

    make_image_folder(tmp_path / "im", patients=40, metadata=False)
    decoded: list[str] = []
    real = own_module.decode_image

    def counting(source: Any, name: str | None = None) -> Any:
        decoded.append(str(name))
        return real(source, name=name)

    monkeypatch.setattr(own_module, "decode_image", counting)
    domain = own("im", {"format": "imagefolder", "path": "im", "max_train_samples": 20})
    dd = domain.load_splits(tmp_path / "raw")
    assert len(dd["train"]) == 20
    assert len(decoded) == 20 + len(dd["validation"]) + len(dd["test"]) < 120


def test_add_writes_the_section_keeps_comments_and_refuses_bad_data(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    original = "# my settings\nseed: 0\ndomains: [vision]  # what runs\nregimes: [frozen]\nvision: {}\n"
    params.write_text(original)
    root = make_image_folder(tmp_path / "skin", patients=12)
    report = add_domain("skin", root, params, root=tmp_path, group_column="patient")
    assert report["classes"] == {"cat": 18, "dog": 18} and report["splits"] == {"train": 36}
    assert report["width"]["median"] == 16
    text = params.read_text()
    assert text.startswith("# my settings\n") and "domains: [vision, skin]  # what runs" in text
    parsed = parse_params(__import__("yaml").safe_load(text))
    assert parsed.domain("skin").data.path == "skin"  # type: ignore[attr-defined]
    assert (tmp_path / "data" / "sources" / "skin").resolve() == root.resolve()

    one_class = tmp_path / "one"
    (one_class / "cat").mkdir(parents=True)
    for f in (root / "cat").iterdir():
        (one_class / "cat" / f.name).write_bytes(f.read_bytes())
    before = params.read_text()
    with pytest.raises(DegenerateDataError, match=r"single class \['cat'\]"):
        add_domain("one", one_class, params, root=tmp_path)
    assert params.read_text() == before


def test_add_reports_token_lengths_of_the_default_backbone(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("domains:\n- nlp\nregimes: [frozen]\nnlp: {}\n")  # a block-style list too
    table = make_table(tmp_path / "notes.csv", "csv")
    report = add_domain("notes", table, params, root=tmp_path, **NOTE)
    assert report["tokens"]["median"] > 5 and report["max_length"] == 128
    assert parse_params(__import__("yaml").safe_load(params.read_text())).domains == ["nlp", "notes"]
    assert np.isclose(sum(report["classes"].values()), 60)


def test_check_fills_in_a_two_line_section_and_leaves_the_rest(tmp_path: Path) -> None:
    """DVC refuses a stage whose params keys are missing: the defaults of a section written with ``data``
    alone are filled in (once), the rest of the file stays as it was, comments included."""
    import yaml

    from domains.own.add import fill_sections
    from shared.config import load_params

    make_image_folder(tmp_path / "skin", patients=12)
    params = tmp_path / "params.yaml"
    head = "# mine\nseed: 0\ndomains: [vision, skin]\nregimes: [frozen, lora]\nvision: {}  # defaults\n"
    params.write_text(head + "skin:\n  data: {format: imagefolder, path: skin}\n# trailing note\n")
    filled = fill_sections(params, load_params(params))
    assert filled == ["vision: screen", "skin: model, train, evaluate, screen, regimes.frozen, regimes.lora"]
    text = params.read_text()
    assert text.startswith(head.replace("vision: {}  # defaults\n", "vision:\n  screen:")) and \
        text.endswith("# trailing note\n")
    assert yaml.safe_load(text)["vision"] == {"screen": {"finalists": 1, "select_by": "logme", "knn_neighbours": 5}}
    skin = yaml.safe_load(text)["skin"]
    assert skin["data"]["path"] == "skin" and {"frozen", "lora"} <= set(skin["regimes"])
    assert skin["model"]["backbone"] == "tf_efficientnet_lite0"
    assert fill_sections(params, load_params(params)) == []


def test_check_writes_a_list_of_regimes_out_as_the_mapping_dvc_tracks(tmp_path: Path) -> None:
    """``regimes: [frozen]`` narrows a domain; DVC reads ``<domain>.regimes.<regime>``, so the list is written
    out as the mapping (``lora: false``): in a plugin's section only that block, in an own-data section the
    whole section; the rest of the file, comments included, stays."""
    import yaml

    from domains.own.add import fill_sections
    from shared.config import load_params

    make_image_folder(tmp_path / "skin", patients=12)
    params = tmp_path / "params.yaml"
    vision = "vision:\n  model: {backbone: tf_efficientnet_lite0}  # mine\n  regimes: [frozen]\n\n  evaluate: {}\n"
    head = "seed: 0\ndomains: [vision, skin]\nregimes: [frozen, lora]\n"
    params.write_text(head + vision + "skin:\n  data: {format: imagefolder, path: skin}\n  regimes: [lora]\n")
    assert fill_sections(params, load_params(params)) == ["vision: regimes (a list)", "vision: screen",
                                                       "skin: model, train, evaluate, screen, regimes (a list)"]
    text = params.read_text()
    assert text.startswith(head + "vision:\n  model: {backbone: tf_efficientnet_lite0}  # mine\n  regimes:\n")
    assert "\n\n  evaluate: {}\n  screen: {finalists: 1, select_by: logme, knn_neighbours: 5}\nskin:\n" in text
    raw = yaml.safe_load(text)
    assert raw["vision"]["regimes"]["lora"] is False and raw["vision"]["regimes"]["frozen"]["C_grid"]
    assert raw["skin"]["regimes"]["frozen"] is False and raw["skin"]["regimes"]["lora"]["adapter"]["r"] == 8
    loaded = load_params(params)
    assert (loaded.regimes_of("vision"), loaded.regimes_of("skin")) == (["frozen"], ["lora"])
    assert fill_sections(params, loaded) == []
