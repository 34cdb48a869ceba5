"""Typed ``params.yaml``: pydantic models (``extra="forbid"``) and :func:`load_params`.

Layout of ``params.yaml``::

    seed: 0
    domains: [vision, nlp]          # what ``dvc repro`` runs
    regimes: [scratch, frozen, ...] # crossed with domains in dvc.yaml
    <domain>:                       # one section per domain, validated by that domain's ``Params``
      data:  {...}                  # fetch / prepare
      model: {...}                  # extract / train (backbone, resolution, sequence length)
      train: {...}                  # the shared training loop
      regimes: {frozen: {...}, partial: {...}, ...}

Each stage lists only the sub-sections it reads, so DVC re-runs exactly what changed; the always-run
``check`` stage (``pipelines/check.py``) validates the whole file on every ``dvc repro``.

Strictness: integers are strict (``true`` is not 1, ``2.0`` is not 2), floats accept integers but not
``.inf``/``.nan``, and a key given twice in one mapping is an error naming the key and its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from shared.registry import domain_class, get_regime, list_domains, list_regimes, section_format

PosFloat = Annotated[float, Field(gt=0)]


def _known_regimes(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in list_regimes()]
    if unknown:
        raise ValueError(f"unknown regime(s) {unknown}; registered regimes: {list_regimes()}")
    return values


def _validate_nested(model: type[BaseModel], value: Any, where: str) -> BaseModel:
    """Validate a nested section; its errors keep their own locations below ``where`` (so a message names
    ``<domain>.regimes.<regime>.<key>``)."""
    try:
        return model.model_validate(value)
    except ValidationError as err:
        errors: list[Any] = [{"type": e["type"], "loc": (where, *e["loc"]), "input": e["input"],
                              **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in err.errors()]
        raise ValidationError.from_exception_data(model.__name__, errors) from None


class ParamsError(ValueError):
    """Invalid parameters; the message names the file, key and value."""


class Strict(BaseModel):
    """Base for every params model: unknown keys are errors, assignments are validated, floats are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class DataParams(Strict):
    """What ``fetch`` and ``prepare`` read. Domains subclass it to add their own keys."""

    dataset: str
    max_train_samples: StrictInt | None = Field(default=None, ge=2)
    max_eval_samples: StrictInt | None = Field(default=None, ge=2)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    dedupe_across_splits: bool = False  # drop train items that duplicate a validation/test item
    bad_images: Literal["fail", "quarantine"] = "fail"


class ModelParams(Strict):
    """The backbone and the input geometry it is fed."""

    backbone: str
    pretrained: bool = True
    weights_file: str | None = None  # a local weights file for names with no offline source
    image_size: StrictInt | None = Field(default=None, ge=8, le=1024)
    max_length: StrictInt | None = Field(default=None, ge=8, le=4096)
    extract_batch_size: StrictInt = Field(default=128, ge=1)
    # the precision of the extract stage's forward passes, as train.precision (auto: timed forward passes)
    extract_precision: Literal["auto", "fp32", "bf16"] = "auto"

    @property
    def name(self) -> str:
        """The candidate name of this backbone: ``backbone``, with :data:`RANDOM_SUFFIX` when it starts from
        a random initialisation (``pretrained: false``); stage names and output folders use it."""
        return self.backbone + ("" if self.pretrained else RANDOM_SUFFIX)

    def candidate(self, name: str) -> ModelParams:
        """These settings for candidate ``name`` (a backbone name; ``<backbone>+random``: its random init)."""
        backbone = name.removesuffix(RANDOM_SUFFIX)
        if not backbone:
            raise ValueError(f"candidate {name!r} names no backbone")
        return self.model_copy(update={"backbone": backbone, "pretrained": not name.endswith(RANDOM_SUFFIX)})


RANDOM_SUFFIX = "+random"  # a candidate name ending in it: that backbone randomly initialised


class ScreenParams(Strict):
    """Backbone screening (stage ``screen@<domain>``): which of the domain's candidates (the top-level
    ``candidates`` entries ``<domain>/<backbone>``) train. ``finalists`` is how many, or ``all``; they are the
    top candidates by ``select_by``, a transferability score of their frozen features
    (:mod:`shared.screening.estimators`; ``probe``: the frozen probe's validation score)."""

    finalists: StrictInt | Literal["all"] = Field(default=1)
    select_by: Literal["logme", "h_score", "shrinkage_h_score", "knn_accuracy", "probe", "leep", "nce"] = "logme"
    knn_neighbours: StrictInt = Field(default=5, ge=1)

    @field_validator("finalists")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("finalists must be at least 1, or 'all'")
        return value


class TrainParams(Strict):
    """The shared training loop (AdamW + warmup + cosine, early stopping on validation)."""

    epochs: StrictInt = Field(default=2, ge=1)
    batch_size: StrictInt = Field(default=32, ge=1)
    lr: PosFloat = 1e-3
    backbone_lr_factor: float = Field(default=0.1, gt=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    patience: StrictInt = Field(default=3, ge=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    max_steps_per_epoch: StrictInt | None = Field(default=None, ge=1)
    # None: the backbone's default (googlenet 0.3, inception_v3 0.4, others none); 0 turns aux heads off
    aux_loss_weight: float | None = Field(default=None, ge=0)
    loss_weighting: Literal["plain", "class_weighted", "balanced_sampling"] = "plain"
    # fp32 | bf16 autocast | auto: bf16 on CUDA; on a CPU with bf16 units (AMX / AVX512-BF16) a few steps are
    # timed in each and bf16 kept only when >= 1.15x faster (cached; shared/training/precision.py); else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # the precision of the validation / test scoring forward (the served package's precision), chosen alike
    # from timed forward passes; on CUDA auto is bf16
    eval_precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    num_workers: StrictInt = Field(default=0, ge=0)
    deterministic: bool = False
    # Fine-tuning a pretrained backbone (partial, full, lp_ft): "frozen" keeps its BatchNorm layers in
    # inference mode with the pretrained running statistics (Keras' transfer-learning advice; batch statistics
    # of small or out-of-domain batches, e.g. grey X-rays, blow the activations up); "train" updates them.
    # scratch always trains them.
    batchnorm: Literal["frozen", "train"] = "frozen"
    # Text: batches of similar-length sentences (transformers' LengthGroupedSampler, random across batches):
    # far less padding, the same examples per epoch
    group_by_length: bool = True
    # The new classifier head of partial / full / lora / scratch: "zeros" (BiT's choice for transfer: the first
    # loss is log(classes) and a pretrained backbone is not pushed around by a random head) or PyTorch's
    # default "random" init (params.yaml sets it for scratch, where nothing is pretrained).
    head_init: Literal["zeros", "random"] = "zeros"


class TrainOverrides(Strict):
    """Per-regime overrides of :class:`TrainParams` (only the keys given are replaced)."""

    epochs: StrictInt | None = Field(default=None, ge=1)
    batch_size: StrictInt | None = Field(default=None, ge=1)
    lr: PosFloat | None = None
    backbone_lr_factor: float | None = Field(default=None, gt=0, le=1)
    weight_decay: float | None = Field(default=None, ge=0)
    warmup_fraction: float | None = Field(default=None, ge=0, lt=1)
    patience: StrictInt | None = Field(default=None, ge=1)
    max_steps_per_epoch: StrictInt | None = Field(default=None, ge=1)
    head_init: Literal["zeros", "random"] | None = None


class EvaluateParams(Strict):
    """Evaluation: bootstrap CIs and the operating threshold for binary tasks."""

    bootstrap: StrictInt = Field(default=1000, ge=0)
    threshold: Literal["youden", "target_sensitivity", "fixed"] = "youden"
    target_sensitivity: float = Field(default=0.9, gt=0, lt=1)
    # the metric that selects (early stopping, best epoch, probe C) and ranks; None: the domain's own
    primary_metric: Literal["accuracy", "macro_f1", "auroc", "auprc"] | None = None


class DomainParams(Strict):
    """One domain's section of ``params.yaml``. Domains subclass it to narrow ``data``."""

    data: DataParams
    model: ModelParams
    train: TrainParams = Field(default_factory=TrainParams)
    # one sub-section per registered regime, validated by that regime's ``Params`` (defaults filled in).
    # ``<regime>: false`` leaves this domain out of that regime of the top-level ``regimes``; a list
    # (``regimes: [frozen, lora]``) names the only ones it runs, with their defaults (the ``check`` stage
    # writes it out as the mapping: DVC tracks each (domain, regime)'s own key)
    regimes: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    screen: ScreenParams = Field(default_factory=ScreenParams)

    @field_validator("regimes", mode="before")
    @classmethod
    def _regime_sections(cls, raw: Any) -> dict[str, Any]:
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            _known_regimes(raw)
            raw = {name: ({} if name in raw else False) for name in list_regimes()}
        if not isinstance(raw, dict):
            raise ValueError("expected a mapping of regime name to settings (or false), or a list of regime "
                             f"names, got {type(raw).__name__}")
        _known_regimes(list(raw))
        out: dict[str, Any] = {}
        for name in list_regimes():
            model = get_regime(name).Params
            value = raw.get(name)
            if value is False:
                out[name] = False  # left out
                continue
            value = {} if value is None or value is True else value
            out[name] = value if isinstance(value, model) else _validate_nested(model, value, name)
        return out

    def runs(self, regime: str) -> bool:
        """False when this section leaves the domain out of ``regime`` (``regimes.<regime>: false``)."""
        return self.regimes.get(regime) is not False

    def train_for(self, regime: str) -> TrainParams:
        """The training settings of ``regime``: the domain's ``train`` with that regime's overrides."""
        section = self.regimes[regime]
        if not isinstance(section, TrainOverrides):
            return self.train
        fields = set(TrainOverrides.model_fields)
        update = {k: v for k, v in section.model_dump(include=fields).items() if v is not None}
        return self.train.model_copy(update=update)


class TrackingParams(Strict):
    """MLflow settings (the URI itself comes from ``MLFLOW_TRACKING_URI`` or the default store)."""

    parent_run: bool = True


class SweepParams(Strict):
    """The opt-in data-efficiency sweep (``dvc repro sweep/dvc.yaml``, or ``python -m pipelines.sweep``; not
    part of the default ``dvc repro``): stratified label fractions of train x regimes x seeds, per domain of
    ``domains`` (each must also be in the top-level ``domains``, whose stages prepare and extract it)."""

    domains: list[str] = Field(default_factory=lambda: ["xray", "ehr"], min_length=1)

    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 1.0], min_length=1)
    regimes: list[str] = Field(default_factory=lambda: ["frozen", "lora", "full", "scratch"], min_length=1)
    seeds: list[Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    min_per_class: StrictInt = Field(default=2, ge=1)  # floor of labelled items per class at small fractions
    # every trained point takes at least this many optimizer steps (the subset is repeated within each
    # epoch); 0: the domain's schedule as is, so 15 labels at batch 16 and 2 epochs are 2 steps
    min_steps: StrictInt = Field(default=0, ge=0)

    @field_validator("domains", "fractions", "regimes", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate values in {values}")
        return values

    @field_validator("regimes")
    @classmethod
    def _sweepable(cls, values: list[str]) -> list[str]:
        _known_regimes(values)
        fixed = [v for v in values if not get_regime(v).sweepable]  # e.g. lp_ft: its probe reads every label
        if fixed:
            raise ValueError(f"regime(s) {fixed} cannot be swept (they read every train label)")
        return values


class ProjectParams(Strict):
    """The top level of ``params.yaml``; domain sections live in ``sections``."""

    seed: StrictInt = Field(default=0, ge=0)
    domains: list[str] = Field(min_length=1)
    regimes: list[str] = Field(min_length=1)
    # What dvc.yaml expands extract / train / evaluate over: ``<domain>/<backbone>: <domain>`` (``<backbone>+random``:
    # its random init; DVC cannot split the key, so the domain is spelled out for the stages' dependencies);
    # every domain of ``domains`` needs at least one; ``screen@<domain>`` picks the finalists that train.
    # Absent: each domain's own ``model`` backbone (what :func:`parse_params` fills in; dvc.yaml needs the key)
    candidates: dict[str, str] = Field(default_factory=dict)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    sweep: SweepParams = Field(default_factory=SweepParams)
    sections: dict[str, DomainParams] = Field(default_factory=dict)

    @field_validator("regimes")
    @classmethod
    def _registered(cls, values: list[str]) -> list[str]:
        return _known_regimes(values)

    def domain(self, name: str) -> DomainParams:
        """The validated section of domain ``name``."""
        if name not in self.sections:
            raise ParamsError(f"params.yaml has no section '{name}' (sections: {sorted(self.sections)})")
        return self.sections[name]

    def regimes_of(self, domain: str) -> list[str]:
        """The regimes of the top-level ``regimes`` that ``domain`` runs (its section may leave some out)."""
        return [r for r in self.regimes if self.domain(domain).runs(r)]

    def candidates_of(self, domain: str) -> list[str]:
        """The backbones (candidate names) of ``domain`` in the top-level ``candidates``, in order."""
        return [key.partition("/")[2] for key, owner in self.candidates.items() if owner == domain]

    def candidate_params(self, domain: str, candidate: str) -> DomainParams:
        """``domain``'s section with its model set to ``candidate`` (see :meth:`ModelParams.candidate`)."""
        dp = self.domain(domain)
        return dp.model_copy(update={"model": dp.model.candidate(candidate)})

    def domain_class(self, name: str) -> Any:
        """The domain class of section ``name`` (a registered plugin, or an own-data domain)."""
        return domain_class(name, section_format(self.sections[name]) if name in self.sections else None)


def _format(err: ValidationError, path: Path, prefix: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {e['msg']}{shown}")
    return f"{path}: invalid parameters\n" + "\n".join(lines)


def validate_section(name: str, raw: Any, path: Path | str = "params.yaml") -> DomainParams:
    """Validate one domain section with that domain's ``Params`` model (an own-data section: the model of
    the domain reading its ``data.format``)."""
    try:
        model = domain_class(name, section_format(raw)).Params
    except LookupError as err:
        raise ParamsError(f"{path}: {err}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format(err, Path(path), name)) from None


def parse_params(raw: Any, path: Path | str = "params.yaml") -> ProjectParams:
    """Validate an already-parsed params mapping (see :func:`load_params`)."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    top_keys = set(ProjectParams.model_fields) - {"sections"}
    known = set(list_domains()) | {k for k, v in raw.items() if k not in top_keys and section_format(v)}
    unknown = [k for k in raw if k not in top_keys and k not in known]
    if unknown:
        raise ParamsError(
            f"{path}: unknown key(s) {unknown}; allowed: {sorted(top_keys)}, a domain section "
            f"{sorted(known)}, or your own data: a section whose data names a format (imagefolder, csv, ...)"
        )
    top = {k: v for k, v in raw.items() if k in top_keys}
    sections = {k: validate_section(k, v, path) for k, v in raw.items() if k in known}
    try:
        params = ProjectParams.model_validate(top)
    except ValidationError as err:
        raise ParamsError(_format(err, path, "")) from None
    params.sections = sections
    missing = [d for d in params.domains if d not in known]
    if missing:
        raise ParamsError(f"{path}: domains {missing} are not registered; registered: {sorted(known)}")
    unsectioned = [d for d in params.domains if d not in sections]
    if unsectioned:
        raise ParamsError(f"{path}: domains {unsectioned} are listed but have no section")
    if "candidates" not in raw:
        params.candidates = {f"{d}/{params.domain(d).model.name}": d for d in params.domains}
    _check_candidates(params, path)
    idle = [d for d in params.domains if not params.regimes_of(d)]
    if idle:
        raise ParamsError(f"{path}: {', '.join(f'{d}.regimes' for d in idle)} leaves out every regime of "
                          f"regimes {params.regimes}")
    return params


def _check_candidates(params: ProjectParams, path: Path) -> None:
    """Every ``candidates`` entry is ``<domain>/<backbone>: <domain>`` with a domain of ``domains``; every
    domain of ``domains`` has at least one."""
    bad = [f"{key}: {owner}" for key, owner in params.candidates.items()
           if key.partition("/")[0] != owner or not key.partition("/")[2] or owner not in params.domains]
    if bad:
        raise ParamsError(f"{path}: candidates {bad}: each entry must be '<domain>/<backbone>: <domain>' with a "
                          f"domain of domains {params.domains} (dvc.yaml runs extract/train/evaluate for each)")
    none = [d for d in params.domains if not params.candidates_of(d)]
    if none:
        hint = ", ".join(f"'{d}/{params.domain(d).model.name}: {d}'" for d in none)
        raise ParamsError(f"{path}: domains {none} have no entry in candidates; add e.g. {hint}")


def _check_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "",
                          seen: set[int] | None = None) -> None:
    """Raise :class:`ParamsError` at the first key given twice in one mapping of the composed YAML tree."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            dotted = f"{prefix}.{name}" if prefix else name
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first_line:
                    raise ParamsError(f"{path}:{line}: duplicate key '{dotted}' "
                                      f"(first given at line {first_line[key.tag, key.value]})")
                first_line[key.tag, key.value] = line
            _check_duplicate_keys(value, path, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, path, f"{prefix}.{i}" if prefix else str(i), seen)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file like ``yaml.safe_load``, but a key given twice in one mapping is an error.

    PyYAML keeps the last of duplicate keys silently; the :class:`ParamsError` names the file, the line
    and the full dotted key (``params.yaml:12: duplicate key 'vision.train.lr' (first given at line 9)``).
    """
    path = Path(path)
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def load_params(path: Path | str = "params.yaml") -> ProjectParams:
    """Read (:func:`read_yaml`) and validate ``params.yaml``; raise :class:`ParamsError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    return parse_params(read_yaml(path), path)


def materialize(params: ProjectParams) -> dict[str, Any]:
    """Every key with its effective value (defaults filled in), as ``params.yaml`` would spell it.

    DVC tracks the params a stage lists by key, so a file written from this has every key a stage names.
    """
    out: dict[str, Any] = params.model_dump(mode="json", exclude={"sections"})
    for name, section in params.sections.items():
        out[name] = section.model_dump(mode="json")
    return out
