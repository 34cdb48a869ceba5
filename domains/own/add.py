"""``transferlab add NAME PATH``: inspect an image folder or a table, print what a user needs to know, and
add it to ``params.yaml`` as an own-data domain (:mod:`domains.own`).

The params file is edited as text (its comments stay): the section is appended with every key DVC tracks
(``data``, ``model``, ``train``, ``evaluate``, ``regimes.<regime>``, defaults filled in), ``NAME`` is added
to the ``domains`` list, and the result is validated; on any error the file is left as it was.
:func:`fill_sections` (run by the ``check`` stage) does the same filling for an own-data section written
by hand with ``data`` alone, because DVC refuses a stage whose params keys are missing, and writes a list of
regimes out as the mapping DVC tracks.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from domains.own import DEFAULT_MODEL, OwnDomain, label_values, source_path
from shared.config import ParamsError, ProjectParams, load_params, parse_params, read_yaml
from shared.data.domain import link_source
from shared.files.atomic import atomic_path
from shared.registry import domain_class, list_domains, section_format

TRACKED = ("data", "model", "train", "evaluate", "screen")  # and regimes.<regime>: the keys dvc.yaml's stages list

SUFFIX_FORMAT = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
DOMAINS_LINE = re.compile(r"^domains:\s*\[(?P<items>[^\]]*)\]\s*(?P<comment>#.*)?$", re.MULTILINE)
DOMAINS_BLOCK = re.compile(r"^domains:[ \t]*(#.*)?\n(?P<items>(?:[ \t]*- .*\n)+)", re.MULTILINE)


def guess_format(path: Path) -> str:
    """``imagefolder`` for a folder, else by the file's suffix."""
    if path.is_dir():
        return "imagefolder"
    if path.suffix.lower() in SUFFIX_FORMAT:
        return SUFFIX_FORMAT[path.suffix.lower()]
    raise ParamsError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; give --format "
                      f"(imagefolder, csv, jsonl, parquet)")


def percentiles(values: list[int]) -> dict[str, float]:
    """Median and 95th percentile."""
    arr = np.asarray(values, dtype=float)
    return {"median": float(np.median(arr)), "p95": float(np.percentile(arr, 95))}


def inspect_domain(domain: OwnDomain, sample: int = 500) -> dict[str, Any]:
    """Classes with counts, the splits found, and image sizes or text lengths in tokens of the backbone
    (median and 95th percentile over up to ``sample`` items). Data that cannot be a classification task
    raises, naming the classes or columns (see :mod:`domains.own`)."""
    splits, label = domain.read()
    out: dict[str, Any] = {
        "classes": dict(Counter(v for ds in splits.values() for v in label_values(ds, label))),
        "splits": {s: len(ds) for s, ds in splits.items()},
        "dropped": dict(domain.load_report.get("dropped", {})),
    }
    train = splits["train"]
    rows = train.select(range(min(sample, len(train))))
    if domain.modality == "image":
        from PIL import Image

        sizes = []
        for item in rows["image"]:
            with Image.open(item["path"] or item["bytes"]) as img:
                sizes.append(img.size)
        out["width"], out["height"] = percentiles([w for w, _ in sizes]), percentiles([h for _, h in sizes])
    else:
        from shared.models import load_tokenizer

        tokenizer = load_tokenizer(domain.params.model)
        texts = [str(t) for t in rows[domain.params.data.text_column]]
        lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]  # untruncated
        out["tokens"] = percentiles(lengths)
        out["max_length"] = domain.params.model.max_length
    return out


def with_domain(text: str, name: str, where: Path) -> str:
    """``text`` (a params file) with ``name`` appended to its ``domains`` list, one-line or block style."""
    match = DOMAINS_LINE.search(text)
    if match is not None:
        items = [i.strip() for i in match["items"].split(",") if i.strip()]
        line = f"domains: [{', '.join([*items, name])}]" + (f"  {match['comment']}" if match["comment"] else "")
        return text[: match.start()] + line + text[match.end():]
    block = DOMAINS_BLOCK.search(text)
    if block is None:
        raise ParamsError(f"{where}: no 'domains:' list to add '{name}' to; add it by hand")
    last = block["items"].splitlines()[-1]
    indent = last[: len(last) - len(last.lstrip())]
    return text[: block.end()] + f"{indent}- {name}\n" + text[block.end():]


CANDIDATES_BLOCK = re.compile(r"^candidates:[ \t]*(#.*)?\n(?P<items>(?:[ \t]+\S.*\n|[ \t]*#.*\n)+)", re.M)


def with_candidate(text: str, key: str, domain: str, where: Path) -> str:
    """``text`` (a params file) with ``key: domain`` added to its block-style ``candidates`` mapping."""
    block = CANDIDATES_BLOCK.search(text)
    if block is None:
        raise ParamsError(f"{where}: no block-style 'candidates:' mapping to add '{key}: {domain}' to; add it by hand")
    entries = [line for line in block["items"].splitlines() if line.strip() and not line.lstrip().startswith("#")]
    indent = entries[-1][: len(entries[-1]) - len(entries[-1].lstrip())] if entries else "  "
    return text[: block.end()] + f"{indent}{key}: {domain}\n" + text[block.end():]


def section_for(path: Path, fmt: str, options: dict[str, Any], root: Path) -> dict[str, Any]:
    """The params section: ``data`` with the format, the path (relative to the project when inside it) and
    the given column options."""
    resolved = path.expanduser().resolve()
    try:
        shown = str(resolved.relative_to(root.resolve()))
    except ValueError:
        shown = str(resolved)
    data = {"format": fmt, "path": shown, **{k: v for k, v in options.items() if v is not None}}
    return {"data": data}


def add_domain(name: str, path: Path, params_file: Path, *, fmt: str | None = None, root: Path,
               **options: Any) -> dict[str, Any]:
    """Inspect ``path``, append the section ``name`` to ``params_file`` and list ``name`` in its
    ``domains``; return the inspection. Nothing is written when anything fails."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ParamsError(f"domain name {name!r}: use lower-case letters, digits and '_' (it names stages)")
    if not path.expanduser().exists():
        raise ParamsError(f"{path}: no such file or folder")
    raw = read_yaml(params_file)
    if name in raw:
        raise ParamsError(f"{params_file}: a section '{name}' exists already")
    section = section_for(path, fmt or guess_format(path.expanduser()), options, root)
    modality = domain_class(name, section["data"]["format"]).modality
    candidate = f"{name}/{DEFAULT_MODEL[modality]['backbone']}"  # its one candidate backbone: nothing to screen
    listed = "candidates" in raw  # absent: every domain's own backbone is its candidate (the default)
    extra = {"candidates": {**raw["candidates"], candidate: name}} if listed else {}
    params = parse_params({**raw, name: section, "domains": [*raw.get("domains", []), name], **extra}, params_file)
    domain = domain_class(name, section["data"]["format"])(params.domain(name))
    assert isinstance(domain, OwnDomain)
    source_path(domain.params.data)
    report = inspect_domain(domain)
    text = params_file.read_text()
    new = with_domain(text, name, params_file)
    if listed:
        new = with_candidate(new, candidate, name, params_file)
    new = new.rstrip("\n") + f"\n\n# added by `transferlab add {name} {path}`\n"
    new += yaml.safe_dump({name: params.domain(name).model_dump(mode="json")}, sort_keys=False,
                          default_flow_style=None)
    params_file.write_text(new)
    try:
        checked = load_params(params_file)
    except ParamsError:
        params_file.write_text(text)
        raise
    link_source(checked.domain_class(name)(checked.domain(name)))
    return report


def missing_keys(raw: dict[str, Any], regimes: list[str]) -> list[str]:
    """The keys of a raw section that ``dvc.yaml``'s stages track but the section does not give (a list of
    regimes gives none of them: DVC reads ``regimes.<regime>``)."""
    missing = [k for k in TRACKED if k not in raw]
    given = raw.get("regimes") or {}
    if isinstance(given, list):
        return [*missing, "regimes (a list)"]
    return missing + [f"regimes.{r}" for r in regimes if r not in given]


def replace_section(text: str, name: str, section: dict[str, Any], key: str | None = None) -> str:
    """``text`` with its top-level section ``name`` (from ``name:`` to the next line at column 0 that is not
    blank) replaced by ``section`` in YAML; with ``key``, only that key's block inside the section is
    replaced, by ``section[key]`` (comments inside the replaced block are not kept), or added when the section
    lacks it."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}\s*:", line)), None)
    if start is None:
        raise ParamsError(f"no top-level section '{name}' to fill in")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()),
               len(lines))
    if key is None:
        dumped = yaml.safe_dump({name: section}, sort_keys=False, default_flow_style=None)
        return "".join(lines[:start]) + dumped + "".join(lines[end:])
    sub = next((i for i in range(start + 1, end) if re.match(rf"\s+{re.escape(key)}\s*:", lines[i])), None)
    if sub is None:  # a key the section lacks: added after its last line, indented like its first key
        last = max((i for i in range(start + 1, end) if lines[i].strip()), default=start)
        first = next((line for line in lines[start + 1:end] if line.strip()), "  x")
        indent = len(first) - len(first.lstrip())
        dumped = f"{key}: " + yaml.safe_dump(section[key], sort_keys=False, default_flow_style=True, width=10**6)
        return "".join(lines[:last + 1]) + " " * indent + dumped + "".join(lines[last + 1:])
    indent = len(lines[sub]) - len(lines[sub].lstrip())
    sub_end = next((i for i in range(sub + 1, end)
                    if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= indent), end)
    while sub_end > sub + 1 and not lines[sub_end - 1].strip():  # keep the blank lines after the block
        sub_end -= 1
    dumped = yaml.safe_dump({key: section[key]}, sort_keys=False, default_flow_style=None)
    block = "".join(" " * indent + line if line.strip() else line for line in dumped.splitlines(keepends=True))
    return "".join(lines[:sub]) + block + "".join(lines[sub_end:])


def fill_sections(params_file: Path, params: ProjectParams) -> list[str]:
    """Write out what DVC must find in every section of ``domains``: the defaults of an own-data section
    that lacks keys DVC tracks, and a list of regimes (``regimes: [frozen, lora]``) as the mapping
    ``{frozen: {...}, lora: {...}, <other>: false}``. Return ``["<name>: <keys>", ...]`` for those filled
    (nothing else in the file changes)."""
    raw = read_yaml(params_file)
    text, filled = params_file.read_text(), []
    for name in params.domains:
        section = raw.get(name) or {}
        if name in list_domains():  # a plugin's section: a list of regimes written out, a missing screen added
            if isinstance(section.get("regimes"), list):
                dumped = params.domain(name).model_dump(mode="json", include={"regimes"}, exclude_none=True)
                text = replace_section(text, name, dumped, key="regimes")
                filled.append(f"{name}: regimes (a list)")
            if isinstance(section, dict) and "screen" not in section:
                screen = params.domain(name).model_dump(mode="json", include={"screen"})
                header = next(line for line in text.splitlines() if re.match(rf"{re.escape(name)}\s*:", line))
                inline = re.match(rf"{re.escape(name)}\s*:\s*[^\s#]", header)
                # a one-line section (`vision: {}`) is written out whole, with its own keys kept
                text = (replace_section(text, name, {**section, **screen}) if inline
                        else replace_section(text, name, screen, key="screen"))
                filled.append(f"{name}: screen")
            continue
        if not section_format(section):
            continue
        missing = missing_keys(section, params.regimes)
        if missing:
            text = replace_section(text, name, params.domain(name).model_dump(mode="json"))
            filled.append(f"{name}: {', '.join(missing)}")
    if filled:
        parse_params(yaml.safe_load(text), params_file)  # the filled file must mean the same
        with atomic_path(params_file) as tmp:
            tmp.write_text(text)
    return filled
