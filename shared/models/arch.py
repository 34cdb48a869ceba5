"""Architecture report: parameters and multiply-accumulates (MACs), measured rather than quoted.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2) for one image; it
counts convolutions and matrix products only (BatchNorm, pooling and activations add no MACs here).
Every function returns plain dicts; :func:`write_report` writes them as markdown and JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from timm.layers import ConvNormAct
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shared.files.atomic import atomic_path, write_json

MODEL_NAMES = ("googlenet", "alexnet", "vgg16", "resnet50", "inception_v3", "tf_efficientnet_lite0")
TORCHVISION_MODELS = ("alexnet", "vgg16", "resnet50")
NATIVE_SIZE = {"inception_v3": 299}  # every other model here is natively 224 px
COUNTING = ("torch.utils.flop_counter.FlopCounterMode, batch 1, MACs = FLOPs / 2; convolutions and matrix "
            "products only")
_BRANCHES = ("branch3x3", "branch5x5")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Randomly initialised model by name (torchvision for AlexNet/VGG-16/ResNet-50, timm otherwise)."""
    if name in TORCHVISION_MODELS:
        return getattr(torchvision.models, name)(weights=None, **kwargs)
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}'; choose from {', '.join(MODEL_NAMES)}")
    if name == "googlenet":
        import shared.models.googlenet  # noqa: F401  (registers the model with timm)
    return timm.create_model(name, pretrained=False, **kwargs)


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def _flop_counts(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """FLOPs per module path ('' = whole model), from one forward pass without gradients."""
    root = type(model).__name__
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    counts = {"": counter.get_total_flops()}
    for key, ops in counter.get_flop_counts().items():
        if key.startswith(root + "."):
            counts[key[len(root) + 1:]] = sum(ops.values())
    return counts


def _subtree_flops(flops: dict[str, int], name: str) -> int:
    """FLOPs under module ``name``: its own entry, or (when its forward was bypassed, as when a model
    iterates a stage's blocks itself) the sum over its outermost counted descendants."""
    if name in flops:
        return flops[name]
    inside = [k for k in flops if k.startswith(name + ".")]
    outermost = [k for k in inside if not any(k.startswith(other + ".") for other in inside)]
    return sum(flops[k] for k in outermost)


def count_macs(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """MACs of one forward pass of a single ``in_chans x image_size x image_size`` image."""
    return _flop_counts(model, torch.zeros(1, in_chans, image_size, image_size))[""] // 2


def stage_report(model: nn.Module, image_size: int) -> list[dict[str, Any]]:
    """Parameters and MACs per top-level child module (children with neither are left out).

    The model runs in its current mode: in training mode GoogLeNet's auxiliary heads are counted too.
    """
    flops = _flop_counts(model, torch.zeros(1, 3, image_size, image_size))
    rows = [{"stage": name, "params": count_params(child), "macs": _subtree_flops(flops, name) // 2}
            for name, child in model.named_children()]
    return [row for row in rows if row["params"] or row["macs"]]


def _reductionless(branch: Any) -> nn.Module:
    """The same branch without its 1x1 reduction: the kxk conv applied straight to the module input."""
    conv = branch.conv.conv
    return ConvNormAct(branch.reduce.conv.in_channels, conv.out_channels, conv.kernel_size[0],
                       padding=conv.padding[0])


def inception_branch_report(model: nn.Module, image_size: int) -> list[dict[str, Any]]:
    """For every Inception module: MACs of the 3x3 and "5x5" branches with and without 1x1 reductions.

    Both variants are real modules counted with FlopCounterMode on the module's actual input shape.
    """
    from shared.models.googlenet import Inception

    inputs: dict[str, torch.Size] = {}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs[name] = args[0].shape
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, Inception)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    rows = []
    for name, shape in inputs.items():
        module, x = model.get_submodule(name), torch.zeros(shape)
        row: dict[str, Any] = {"module": name, "input": list(shape[1:])}
        for branch_name in _BRANCHES:
            branch = getattr(module, branch_name)
            with_red = _flop_counts(branch, x)[""] // 2
            without = _flop_counts(_reductionless(branch).eval(), x)[""] // 2
            row[branch_name] = {
                "kernel": branch.conv.conv.kernel_size[0], "reduce_to": branch.reduce.conv.out_channels,
                "macs_with_reduction": with_red, "macs_without_reduction": without,
                "saving": round(1 - with_red / without, 4),
            }
        rows.append(row)
    return rows


def model_summary(name: str, image_size: int) -> dict[str, Any]:
    """Totals and per-stage numbers for one model; GoogLeNet also with aux heads and branch analysis."""
    model = build_model(name).eval()
    native = NATIVE_SIZE.get(name, 224)
    summary: dict[str, Any] = {
        "model": name, "image_size": image_size, "native_size": native,
        "params": count_params(model), "macs": count_macs(model, image_size),
        "stages": stage_report(model, image_size),
    }
    if native != image_size:
        summary["macs_at_native_size"] = count_macs(model, native)
    if name == "googlenet":
        with_aux = build_model(name, aux_logits=True).train()
        summary["params_with_aux"] = count_params(with_aux)
        summary["macs_with_aux_training"] = count_macs(with_aux, image_size)
        summary["stages_with_aux_training"] = stage_report(with_aux, image_size)
        summary["inception_branches"] = inception_branch_report(model, image_size)
        summary["inception_branches_paper_5x5"] = inception_branch_report(
            build_model(name, branch5x5_kernel=5), image_size)
    return summary


def compare(names: list[str], image_size: int = 224) -> dict[str, Any]:
    """The report: one :func:`model_summary` per name plus a comparison table (plain dicts)."""
    models = {name: model_summary(name, image_size) for name in names}
    table = []
    for name, s in models.items():
        table.append({"model": name, "params": s["params"], "macs": s["macs"], "image_size": image_size,
                      "native_size": s["native_size"], "macs_at_native_size": s.get("macs_at_native_size")})
        if "params_with_aux" in s:
            table.append({"model": f"{name} (+aux heads)", "params": s["params_with_aux"],
                          "macs": s["macs_with_aux_training"],
                          "image_size": image_size, "native_size": s["native_size"],
                          "macs_at_native_size": None})
    return {"image_size": image_size, "counting": COUNTING, "comparison": table, "models": models}


def _m(n: int | None, scale: float = 1e6, unit: str = "M") -> str:
    return "-" if n is None else f"{n / scale:,.2f} {unit}"


def _branch_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| module | input | 3x3: with 1x1 red. | without | saving | 5x5 branch (k) | with 1x1 red. "
             "| without | saving |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["branch3x3"], r["branch5x5"]
        lines.append(f"| {r['module']} | {'x'.join(map(str, r['input']))} | {_m(a['macs_with_reduction'])} | "
                     f"{_m(a['macs_without_reduction'])} | {a['saving']:.0%} | k={b['kernel']} | "
                     f"{_m(b['macs_with_reduction'])} | {_m(b['macs_without_reduction'])} | "
                     f"{b['saving']:.0%} |")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """Render a :func:`compare` report as markdown."""
    size = report["image_size"]
    out = [f"# Architecture report ({size} px)", "", f"Counting: {report['counting']}.", "",
           "| model | params | MACs @ input | input px | native px | MACs @ native |",
           "|---|---|---|---|---|---|"]
    for r in report["comparison"]:
        out.append(f"| {r['model']} | {_m(r['params'])} | {_m(r['macs'], 1e9, 'G')} | {r['image_size']} | "
                   f"{r['native_size']} | {_m(r['macs_at_native_size'], 1e9, 'G')} |")
    out += ["", "`(+aux heads)`: training-mode forward with the auxiliary classifiers (not run in eval)."]
    for name, s in report["models"].items():
        aux_note = " (training mode; aux1/aux2 run only in training)" if "params_with_aux" in s else ""
        out += ["", f"## {name}", "", f"Per stage{aux_note}:", ""]
        out += ["| stage | params | MACs |", "|---|---|---|"]
        stages = s.get("stages_with_aux_training", s["stages"])
        out += [f"| {r['stage']} | {_m(r['params'])} | {_m(r['macs'])} |" for r in stages]
        if "inception_branches" in s:
            out += ["", "### Inception branches and their 1x1 reductions (torchvision: 5x5 branch has k=3)",
                    "", *_branch_table(s["inception_branches"]), "", "### Same, with the paper's 5x5 kernel",
                    "", *_branch_table(s["inception_branches_paper_5x5"])]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``arch.md`` and ``arch.json`` into ``out_dir`` (atomically) and return their paths."""
    md_path, json_path = Path(out_dir) / "arch.md", Path(out_dir) / "arch.json"
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(report))
    write_json(json_path, report)
    return md_path, json_path
