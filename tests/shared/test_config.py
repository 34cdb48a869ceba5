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

def substitute(text: str, item: str | dict[str, str]) -> str:
    """Replace ``${item}`` / ``${item.<key>}`` like DVC's foreach / matrix interpolation."""
    if isinstance(item, dict):
        for key, value in item.items():
            text = text.replace(f"${{item.{key}}}", value)
    else:
        text = text.replace("${item}", item)
    assert "${" not in text, f"unsubstituted variable in {text!r}"
    return text


def stage_param_keys() -> list[tuple[str, str]]:
    """``(stage instance, params key)`` for every expanded stage of dvc.yaml (params.yaml keys only), with
    ``domains`` taken as every domain that has a section, so enabling one later cannot break DVC."""
    dvc = yaml.safe_load(DVC_FILE.read_text())
    top = yaml.safe_load(PARAMS_FILE.read_text())
    top["domains"] = [key for key in top if key in list_domains()]
    out: list[tuple[str, str]] = []
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:
            assert stage["foreach"] == "${domains}", f"{name}: unexpected foreach {stage['foreach']}"
            items: list[str | dict[str, str]] = list(top["domains"])
            body = stage["do"]
        elif "matrix" in stage:
            axes = {k: top[v[2:-1]] for k, v in stage["matrix"].items()}
            assert list(axes) == ["domain", "regime"], f"{name}: unexpected matrix {stage['matrix']}"
            items = [{"domain": d, "regime": r} for d in axes["domain"] for r in axes["regime"]]
            body = stage
        else:
            items, body = [""], stage
        for item in items:
            suffix = "-".join(item.values()) if isinstance(item, dict) else item
            label = f"{name}@{suffix}" if suffix else name  # DVC's own stage names
            for entry in body.get("params", []):
                keys = [entry] if isinstance(entry, str) else entry.get("params.yaml", [])
                out.extend((label, substitute(key, item)) for key in keys)
    return out


def test_dvc_yaml_lists_params_keys() -> None:
    keys = stage_param_keys()
    labels = {label for label, _ in keys}
    assert "train@vision-lora" in labels and "fetch@ehr" in labels
    assert ("compare", "regimes") in keys


def test_every_params_key_a_stage_lists_exists_in_params_yaml() -> None:
    # DVC refuses to run a stage whose params key is absent: "Parameters '...' are missing from ..."
    from dvc.dependency.param import read_param_file
    from dvc.fs import LocalFileSystem

    keys = stage_param_keys()
    found = read_param_file(LocalFileSystem(), str(PARAMS_FILE), sorted({k for _, k in keys}), flatten=True)
    missing = sorted({f"{key} (stage {label})" for label, key in keys if key not in found})
    assert not missing, f"{len(missing)} params key(s) listed in dvc.yaml are missing from params.yaml " \
                        f"(write them, even as {{}}): {missing}"
