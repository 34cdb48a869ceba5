"""The architecture report: counting logic at small sizes, parameter counts, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from pipelines.arch import main
from shared.models.arch import (
    MODEL_NAMES,
    build_model,
    compare,
    count_macs,
    count_params,
    inception_branch_report,
    stage_report,
)

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def test_macs_of_conv_and_linear_match_hand_count() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 5))
    assert count_macs(model, 8) == 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8 * 5


def test_param_counts_of_reference_models() -> None:
    assert 6.6e6 <= count_params(build_model("googlenet")) <= 7.0e6
    assert count_params(build_model("googlenet", aux_logits=True)) > count_params(build_model("googlenet"))
    assert abs(count_params(build_model("alexnet")) - 61e6) < 0.5e6
    assert abs(count_params(build_model("vgg16")) - 138e6) < 0.5e6


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="googlenet"):
        build_model("lenet")


def test_stages_add_up_to_the_total() -> None:
    model = build_model("googlenet").eval()
    rows = stage_report(model, SIZE)
    assert [r["stage"] for r in rows] == ["stem", "inception3", "inception4", "inception5", "fc"]
    assert all(r["macs"] > 0 for r in rows)
    assert sum(r["macs"] for r in rows) == count_macs(model, SIZE)
    assert sum(r["params"] for r in rows) == count_params(model)


def test_inception_branches_with_and_without_reduction() -> None:
    rows = inception_branch_report(build_model("googlenet"), SIZE)
    assert len(rows) == 9
    assert [r["module"] for r in rows][:3] == ["inception3.a", "inception3.b", "inception4.a"]
    first = rows[0]
    c, h, w = first["input"]
    assert (c, h, w) == (192, SIZE // 8, SIZE // 8)
    # inception3a: 1x1 192->96 then 3x3 96->128, against a 3x3 192->128 straight away
    assert first["branch3x3"]["macs_with_reduction"] == h * w * (192 * 96 + 96 * 128 * 9)
    assert first["branch3x3"]["macs_without_reduction"] == h * w * 192 * 128 * 9
    for row in rows:
        for branch in ("branch3x3", "branch5x5"):
            assert 0 < row[branch]["macs_with_reduction"] < row[branch]["macs_without_reduction"]
    paper = inception_branch_report(build_model("googlenet", branch5x5_kernel=5), SIZE)
    assert paper[0]["branch5x5"]["kernel"] == 5
    assert paper[0]["branch5x5"]["macs_without_reduction"] == h * w * 192 * 32 * 25


def test_compare_reports_aux_heads_separately() -> None:
    report = compare(["googlenet", "alexnet"], image_size=SIZE)
    rows = {r["model"]: r for r in report["comparison"]}
    assert set(rows) == {"googlenet", "googlenet (+aux heads)", "alexnet"}
    assert rows["googlenet (+aux heads)"]["params"] > rows["googlenet"]["params"]
    assert rows["googlenet (+aux heads)"]["macs"] > rows["googlenet"]["macs"]
    assert rows["googlenet"]["native_size"] == 224 and rows["googlenet"]["image_size"] == SIZE
    assert rows["googlenet"]["macs_at_native_size"] > rows["googlenet"]["macs"]
    json.dumps(report)  # plain data only


def test_cli_prints_and_writes_markdown_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["googlenet", "--out", str(tmp_path), "--image-size", str(SIZE)]) == 0
    printed = capsys.readouterr().out
    assert "| googlenet |" in printed and printed == (tmp_path / "arch.md").read_text()
    data = json.loads((tmp_path / "arch.json").read_text())
    assert data["image_size"] == SIZE and list(data["models"]) == ["googlenet"]


def test_full_comparison_at_224() -> None:
    report = compare(list(MODEL_NAMES), image_size=224)
    macs = {r["model"]: r["macs"] for r in report["comparison"]}
    assert 0.6e9 < macs["alexnet"] < 0.8e9
    assert 1.4e9 < macs["googlenet"] < 1.6e9
    assert 4.0e9 < macs["resnet50"] < 4.2e9
    assert 15.3e9 < macs["vgg16"] < 15.7e9
    assert report["models"]["inception_v3"]["native_size"] == 299
    assert report["models"]["inception_v3"]["macs_at_native_size"] > macs["inception_v3"]
