"""shared.config: typed params.yaml, errors that name the key path, and agreement with dvc.yaml."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import ParamsError, load_params, materialize, parse_params
from shared.registry import list_domains

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO_ROOT / "params.yaml"
DVC_FILE = REPO_ROOT / "dvc.yaml"


@pytest.fixture()
def raw() -> dict[str, Any]:
    """A deep copy of the repository's params.yaml, to break one key at a time."""
    return copy.deepcopy(yaml.safe_load(PARAMS_FILE.read_text()))


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw, "p.yaml")
    return str(info.value)


def test_repository_params_validate() -> None:
    params = load_params(PARAMS_FILE)
    assert set(params.sections) == {"vision", "nlp", "xray", "dermatology", "ehr"}  # every built-in has a section
    assert params.domains and set(params.domains) <= set(params.sections)
    assert params.domain("vision").model.backbone == "tf_efficientnet_lite0"


def test_unknown_top_level_key_is_named(raw: dict[str, Any]) -> None:
    raw["seeed"] = 1
    message = error_of(raw)
    assert message.startswith("p.yaml: unknown key(s) ['seeed']")
    assert "'seed'" in message and "'vision'" in message  # lists what is allowed


def test_unknown_nested_key_names_the_key_path(raw: dict[str, Any]) -> None:
    raw["vision"]["train"]["epoch"] = 3  # typo of epochs
    message = error_of(raw)
    assert "vision.train.epoch: Extra inputs are not permitted (got 3)" in message


def test_unknown_key_in_a_domain_specific_section(raw: dict[str, Any]) -> None:
    raw["xray"]["data"]["sise"] = 64
    assert "xray.data.sise: Extra inputs are not permitted" in error_of(raw)


def test_negative_lr_names_key_and_value(raw: dict[str, Any]) -> None:
    raw["vision"]["train"]["lr"] = -0.001
    assert "vision.train.lr: Input should be greater than 0 (got -0.001)" in error_of(raw)


def test_negative_lr_in_a_regime_override(raw: dict[str, Any]) -> None:
    raw["nlp"]["regimes"]["lora"]["lr"] = -1.0
    assert "nlp.regimes.lora.lr: Input should be greater than 0 (got -1.0)" in error_of(raw)


def test_wrong_type_names_key_and_value(raw: dict[str, Any]) -> None:
    raw["vision"]["train"]["epochs"] = "two"
    assert re.search(r"vision\.train\.epochs: Input should be a valid integer.*\(got 'two'\)", error_of(raw))


def test_unknown_regime_lists_valid_ones(raw: dict[str, Any]) -> None:
    raw["regimes"] = ["frozen", "magic"]
    message = error_of(raw)
    assert "regimes: Value error, unknown regime(s) ['magic']; registered regimes:" in message
    assert "'lp_ft'" in message


def test_unknown_domain_in_domains_lists_registered(raw: dict[str, Any]) -> None:
    raw["domains"] = ["vision", "audio"]
    message = error_of(raw)
    assert f"domains ['audio'] are not registered; registered: {sorted(list_domains())}" in message


def test_listed_domain_without_section(raw: dict[str, Any]) -> None:
    listed = raw["domains"][-1]
    del raw[listed]
    assert f"domains ['{listed}'] are listed but have no section" in error_of(raw)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ParamsError, match="expected a mapping at the top level, got list"):
        parse_params([1, 2], "p.yaml")


def test_load_params_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_materialize_round_trips(raw: dict[str, Any]) -> None:
    params = parse_params(raw)
    full = materialize(params)
    assert full["vision"]["train"]["weight_decay"] == 0.01  # a default, now spelled out
    assert full["vision"]["regimes"]["full"] == {k: None for k in full["vision"]["regimes"]["full"]}
    again = parse_params(yaml.safe_load(yaml.safe_dump(full)))
    assert again == params
    assert materialize(again) == full


def test_train_for_applies_regime_overrides(raw: dict[str, Any]) -> None:
    vision = parse_params(raw).domain("vision")
    scratch = vision.train_for("scratch")
    assert scratch.lr == pytest.approx(3.0e-3)  # vision.regimes.scratch.lr
    assert scratch.epochs == 2 and scratch.backbone_lr_factor == pytest.approx(0.3)  # inherited
    assert vision.train.lr == pytest.approx(1.0e-3)  # the base section is not modified
    assert vision.train_for("lp_ft").lr == pytest.approx(3.0e-4)
    assert vision.train_for("full") == vision.train  # no overrides given
    assert vision.train_for("frozen") is vision.train  # not a trained regime
    xray = parse_params(raw).domain("xray").train_for("scratch")
    assert (xray.epochs, xray.lr, xray.loss_weighting) == (3, pytest.approx(0.003), "class_weighted")


# --- dvc.yaml <-> params.yaml -------------------------------------------------------------------

def substitute(text: str, item: str | dict[str, str], key: str = "") -> str:
    """Replace ``${key}`` / ``${item}`` / ``${item.<key>}`` like DVC's foreach / matrix interpolation."""
    if isinstance(item, dict):
        for name, value in item.items():
            text = text.replace(f"${{item.{name}}}", value)
    else:
        text = text.replace("${item}", item)
    text = text.replace("${key}", key)
    assert "${" not in text, f"unsubstituted variable in {text!r}"
    return text


def every_domain_params() -> dict[str, Any]:
    """The repository's params.yaml with every domain that has a section in ``domains`` (and a candidate),
    so enabling one later cannot break DVC."""
    top = yaml.safe_load(PARAMS_FILE.read_text())
    top["domains"] = [key for key in top if key in list_domains()]
    for domain in top["domains"]:
        if domain not in top["candidates"].values():
            top["candidates"][f"{domain}/{top[domain]['model']['backbone']}"] = domain
    return top


def stage_param_keys() -> list[tuple[str, str, str]]:
    """``(stage instance, params file, key)`` for every expanded stage of dvc.yaml, for every domain with a
    section (:func:`every_domain_params`)."""
    dvc = yaml.safe_load(DVC_FILE.read_text())
    top = every_domain_params()
    out: list[tuple[str, str, str]] = []
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:
            assert stage["foreach"] in ("${domains}", "${candidates}"), f"{name}: unexpected foreach"
            keyed = stage["foreach"] == "${candidates}"
            items: list[tuple[str, str | dict[str, str]]] = (
                list(top["candidates"].items()) if keyed else [("", d) for d in top["domains"]])
            body = stage["do"]
        elif "matrix" in stage:
            axes = {k: top[v[2:-1]] for k, v in stage["matrix"].items()}
            assert list(axes) == ["candidate", "regime"], f"{name}: unexpected matrix {stage['matrix']}"
            items = [("", {"candidate": c, "regime": r}) for c in axes["candidate"] for r in axes["regime"]]
            body = stage
        else:
            items, body = [("", "")], stage
        for key, item in items:
            suffix = key or ("-".join(item.values()) if isinstance(item, dict) else item)
            label = f"{name}@{suffix}" if suffix else name  # DVC's own stage names
            for entry in body.get("params", []):
                pairs = [("params.yaml", entry)] if isinstance(entry, str) else [
                    (file, k) for file, keys in entry.items() for k in keys]
                out.extend((label, substitute(f, item, key), substitute(k, item, key)) for f, k in pairs)
    return out


def test_dvc_yaml_lists_params_keys() -> None:
    keys = stage_param_keys()
    labels = {label for label, _, _ in keys}
    assert "train@vision/tf_efficientnet_lite0-lora" in labels and "fetch@ehr" in labels
    assert "screen@xray" in labels and "extract@ehr/sentence-transformers/all-MiniLM-L6-v2" in labels
    assert ("compare", "params.yaml", "regimes") in keys
    assert ("train@vision/tf_efficientnet_lite0-lora", "data/candidates/vision/tf_efficientnet_lite0.yaml",
            "regimes.lora") in keys


def test_every_params_key_a_stage_lists_exists_in_params_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DVC refuses to run a stage whose params key is absent: "Parameters '...' are missing from ..."; the
    # per-candidate files are the ones the check stage writes (pipelines.check.write_candidates)
    from dvc.dependency.param import read_param_file
    from dvc.fs import LocalFileSystem

    from pipelines.check import write_candidates

    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(every_domain_params()))
    params = load_params(tmp_path / "params.yaml")
    for domain in params.domains:
        (tmp_path / "data" / "sources").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "sources" / domain).symlink_to(REPO_ROOT / "domains")
    write_candidates(params)
    keys = stage_param_keys()
    missing = []
    for file in sorted({f for _, f, _ in keys}):
        wanted = sorted({k for _, f, k in keys if f == file})
        found = read_param_file(LocalFileSystem(), str(tmp_path / file), wanted, flatten=True)
        missing += [f"{file}: {k}" for k in wanted if k not in found]
    assert len({f for _, f, _ in keys}) > 5  # params.yaml and every candidate's file
    assert not missing, f"{len(missing)} params key(s) listed in dvc.yaml are missing (write them, even as {{}}): " \
                        f"{missing}"


# --- strict values and strict YAML --------------------------------------------------------------

def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def replace_line(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not a unique line of params.yaml"
    return text.replace(old, new)


def test_infinite_lr_is_rejected(tmp_path: Path) -> None:
    text = replace_line(PARAMS_FILE.read_text(), "    lr: 1.0e-3                  # head;", "    lr: .inf  # head;")
    with pytest.raises(ParamsError, match=r"vision\.train\.lr: Input should be a finite number \(got inf\)"):
        load_params(write_params(tmp_path, text))


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_non_finite_floats_are_rejected_everywhere(raw: dict[str, Any], value: float) -> None:
    raw["nlp"]["data"]["validation_fraction"] = value
    raw["nlp"]["regimes"]["frozen"]["C_grid"] = [0.1, value]
    message = error_of(raw)
    assert "nlp.data.validation_fraction: Input should be a finite number" in message
    assert "nlp.regimes.frozen.C_grid.1: Input should be a finite number" in message


def test_boolean_seed_is_not_an_integer(tmp_path: Path) -> None:
    text = replace_line(PARAMS_FILE.read_text(), "\nseed: 0\n", "\nseed: true\n")
    with pytest.raises(ParamsError, match=r"\n  seed: Input should be a valid integer \(got True\)"):
        load_params(write_params(tmp_path, text))


@pytest.mark.parametrize(("key", "value"), [("epochs", True), ("batch_size", 32.0), ("patience", "2")])
def test_integer_keys_are_strict(raw: dict[str, Any], key: str, value: Any) -> None:
    raw["vision"]["train"][key] = value
    assert f"vision.train.{key}: Input should be a valid integer (got {value!r})" in error_of(raw)


def test_integer_keys_in_lists_are_strict(raw: dict[str, Any]) -> None:
    raw["sweep"]["seeds"] = [0, False]
    assert "sweep.seeds.1: Input should be a valid integer (got False)" in error_of(raw)


def test_floats_still_accept_integers(raw: dict[str, Any]) -> None:
    raw["vision"]["train"]["lr"] = 1
    raw["vision"]["regimes"]["frozen"]["C_grid"] = [1, 10]
    vision = parse_params(raw).domain("vision")
    assert vision.train.lr == 1.0 and vision.regimes["frozen"].C_grid == [1.0, 10.0]


def test_duplicate_key_names_key_and_line(tmp_path: Path) -> None:
    text = "seed: 0\ndomains: [vision]\nregimes: [frozen]\nvision:\n  data: {dataset: mnist}\n" \
           "  model: {backbone: resnet18}\n  train:\n    lr: 0.1\n    epochs: 2\n    lr: 0.2\n"
    with pytest.raises(ParamsError) as info:
        load_params(write_params(tmp_path, text))
    assert str(info.value) == f"{tmp_path / 'params.yaml'}:10: duplicate key 'vision.train.lr' " \
                              "(first given at line 8)"


def test_duplicate_top_level_key_in_the_repository_file(tmp_path: Path) -> None:
    text = PARAMS_FILE.read_text()
    path = write_params(tmp_path, text + "seed: 1\n")
    line = len(text.splitlines()) + 1
    with pytest.raises(ParamsError, match=rf"params\.yaml:{line}: duplicate key 'seed' \(first given at line \d+\)"):
        load_params(path)


def test_same_key_in_different_mappings_is_not_a_duplicate(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path, PARAMS_FILE.read_text()))  # lr under several sections
    assert params == load_params(PARAMS_FILE)


def test_empty_params_file_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="expected a mapping at the top level, got NoneType"):
        load_params(write_params(tmp_path, ""))


# --- the always-run check stage -----------------------------------------------------------------

def test_dvc_yaml_has_an_always_run_check_stage() -> None:
    stages = yaml.safe_load(DVC_FILE.read_text())["stages"]
    check = stages["check"]
    assert check["cmd"] == "python -m pipelines.check"
    assert check["always_changed"] is True
    assert "params.yaml" in check["deps"] and "outs" not in check
    assert next(iter(stages)) == "check"  # listed first: DVC runs it before the other stages


def test_check_stage_fails_naming_an_unknown_top_level_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import check

    path = write_params(tmp_path, "definitely_not_a_key: 1\n" + PARAMS_FILE.read_text())
    assert check.main(["--params", str(path)]) == 2
    assert f"check: {path}: unknown key(s) ['definitely_not_a_key']" in capsys.readouterr().err


def test_check_stage_validates_sections_of_domains_not_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import check

    text = replace_line(PARAMS_FILE.read_text(), "    test_fraction: 0.2\n", "    test_fracton: 0.2\n")
    assert check.main(["--params", str(write_params(tmp_path, text))]) == 2  # ehr is not in `domains`
    assert "ehr.data.test_fracton: Extra inputs are not permitted" in capsys.readouterr().err


def test_check_stage_passes_and_calls_the_tracking_hook(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import check, common
    from shared import tracking

    calls: list[int] = []
    monkeypatch.setattr(common, "_may_have_running_runs", lambda: True)  # as if the store held a RUNNING run
    monkeypatch.setattr(tracking, "reconcile_store", lambda: calls.append(1), raising=False)
    assert check.main(["--params", str(PARAMS_FILE)]) == 0
    assert calls == [1]
    assert "check: params valid" in capsys.readouterr().out


def test_a_domain_leaves_regimes_out_with_false_or_a_list(raw: dict[str, Any]) -> None:
    """``<domain>.regimes.<regime>: false`` or a list of names narrows the top-level ``regimes`` for that
    domain only; what stays keeps its settings (the list: defaults), and the others run everything."""
    from shared.registry import get_regime

    raw["regimes"] = ["frozen", "lora", "full"]
    raw["vision"]["regimes"]["full"] = False
    raw["nlp"]["regimes"] = ["frozen", "baseline"]  # baseline: registered but not in `regimes`
    params = parse_params(raw)
    assert params.regimes_of("vision") == ["frozen", "lora"]
    assert params.regimes_of("nlp") == ["frozen"]
    assert params.domain("vision").regimes["lora"].adapter.r == 2  # the section's own settings stay
    assert params.domain("nlp").regimes["frozen"] == get_regime("frozen").Params()  # listed: the defaults
    assert not params.domain("nlp").runs("lora") and params.domain("nlp").runs("frozen")
    dumped = materialize(params)  # what the check stage writes out: false for each regime left out
    assert dumped["nlp"]["regimes"]["lora"] is False and dumped["vision"]["regimes"]["full"] is False
    assert parse_params(dumped).regimes_of("nlp") == ["frozen"]


def test_a_left_out_regime_cannot_be_configured(raw: dict[str, Any]) -> None:
    from shared.registry import get_regime

    raw["vision"]["regimes"]["full"] = False
    dp = parse_params(raw).domain("vision")
    with pytest.raises(ValueError, match=r"regime 'full' is left out by this domain's section"):
        get_regime("full").for_domain(dp)


def test_leaving_out_every_regime_or_naming_an_unknown_one_is_an_error(raw: dict[str, Any]) -> None:
    raw["regimes"] = ["frozen", "lora"]
    raw["nlp"]["regimes"] = ["full"]
    assert "nlp.regimes leaves out every regime of regimes ['frozen', 'lora']" in error_of(raw)
    raw["nlp"]["regimes"] = ["frozen", "lorra"]
    assert "nlp.regimes" in error_of(raw) and "unknown regime(s) ['lorra']" in error_of(raw)


def test_candidates_name_their_domain_and_cover_every_domain(raw: dict[str, Any]) -> None:
    params = parse_params(raw)
    assert params.candidates_of("vision") == ["tf_efficientnet_lite0"]
    assert params.candidates_of("nlp") == ["sentence-transformers/all-MiniLM-L6-v2"]
    raw["candidates"]["vision/tf_efficientnet_lite1"] = "nlp"
    assert "candidates ['vision/tf_efficientnet_lite1: nlp']" in error_of(raw)
    del raw["candidates"]["vision/tf_efficientnet_lite1"]
    raw["candidates"]["xray/tf_efficientnet_lite0"] = "xray"  # xray is not in domains
    assert "'<domain>/<backbone>: <domain>'" in error_of(raw)
    del raw["candidates"]["xray/tf_efficientnet_lite0"]
    del raw["candidates"]["nlp/sentence-transformers/all-MiniLM-L6-v2"]
    assert "domains ['nlp'] have no entry in candidates; add e.g. 'nlp/sentence-transformers/all-MiniLM-L6-v2: nlp'" \
        in error_of(raw)


def test_a_candidate_sets_the_backbone_and_random_init(raw: dict[str, Any]) -> None:
    raw["candidates"]["vision/tf_efficientnet_lite0+random"] = "vision"
    params = parse_params(raw)
    random = params.candidate_params("vision", "tf_efficientnet_lite0+random").model
    assert (random.backbone, random.pretrained, random.name) == ("tf_efficientnet_lite0", False,
                                                                 "tf_efficientnet_lite0+random")
    lite1 = params.candidate_params("vision", "tf_efficientnet_lite1").model
    assert (lite1.backbone, lite1.pretrained, lite1.image_size) == ("tf_efficientnet_lite1", True, 128)
    assert params.domain("vision").model.backbone == "tf_efficientnet_lite0"  # the section itself is unchanged


@pytest.mark.parametrize(("value", "message"), [(0, "at least 1"), ("some", "'all'"), (True, "")])
def test_screen_finalists_is_a_positive_count_or_all(raw: dict[str, Any], value: Any, message: str) -> None:
    raw["vision"]["screen"]["finalists"] = value
    assert "vision.screen.finalists" in error_of(raw) and message in error_of(raw)
    raw["vision"]["screen"] = {"select_by": "accuracy"}
    assert "vision.screen.select_by" in error_of(raw)
