"""GoogLeNet as a timm model: contract, auxiliary heads, grouping, features, torchvision conversion."""

from __future__ import annotations

import copy
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models import group_parameters

from shared.data.sources import SourceError
from shared.models.convert import TORCHVISION_KEY_MAP
from shared.models.googlenet import (
    TORCHVISION_URL,
    GoogLeNet,
    convert_torchvision_googlenet,
    load_torchvision_googlenet,
)

SIZE = 64  # smallest comfortable input: 2x2 maps in inception5, 4x4 at the aux taps


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _model(**kwargs: object) -> GoogLeNet:
    torch.manual_seed(0)
    return timm.create_model("googlenet", pretrained=False, **kwargs)


def _loss(outputs: tuple[torch.Tensor, ...], target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    logits, *aux = outputs
    return F.cross_entropy(logits, target) + aux_weight * sum(F.cross_entropy(a, target) for a in aux)


def test_train_forward_backward_reaches_every_parameter() -> None:
    model = _model(num_classes=5, aux_logits=True).train()
    _loss(model(_batch()), torch.tensor([1, 3]), 0.3).backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unreached


def test_eval_returns_logits_and_train_returns_main_and_two_aux() -> None:
    model = _model(num_classes=4, aux_logits=True)
    out = model.train()(_batch())
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 4)] * 3
    logits = model.eval()(_batch())
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 4)
    plain = _model(num_classes=4)
    assert plain.aux1 is None and plain.aux2 is None
    assert isinstance(plain.train()(_batch()), torch.Tensor)


def test_reset_classifier_changes_main_and_aux_class_count() -> None:
    model = _model(num_classes=4, aux_logits=True)
    old_aux = model.aux1
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7 and model.num_classes == 7
    assert model.aux1 is not old_aux
    assert model.aux1.fc2.out_features == model.aux2.fc2.out_features == 7
    assert [o.shape for o in model.train()(_batch())] == [(2, 7)] * 3
    model.reset_classifier(0)
    assert model.eval()(_batch()).shape == (2, model.num_features) == (2, 1024)


def test_aux_loss_weight_changes_the_gradient() -> None:
    model = _model(num_classes=3, aux_logits=True, drop_rate=0.0, aux_drop_rate=0.0).train()
    x, y = _batch(), torch.tensor([0, 2])
    grads = []
    for weight in (0.0, 0.3):
        net = copy.deepcopy(model)
        _loss(net(x), y, weight).backward()
        grads.append(net.stem.conv1.conv.weight.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_coarse_groups_are_stem_then_three_stages_then_head() -> None:
    model = _model(aux_logits=True)
    groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
    prefixes = ["stem.", "inception3.", "inception4.", "inception5."]
    assert len(groups) == len(prefixes) + 1  # timm puts unmatched (classifier, aux heads) last
    for prefix, names in zip(prefixes, groups, strict=False):
        assert names and all(n.startswith(prefix) for n in names)
    assert all(n.startswith(("fc.", "aux1.", "aux2.")) for n in groups[-1])
    assert sum(map(len, groups)) == len(list(model.named_parameters()))


def test_fine_groups_follow_the_blocks_in_order() -> None:
    model = _model()
    groups = list(group_parameters(model, model.group_matcher()).values())
    firsts = [names[0].rsplit(".branch", 1)[0] if ".branch" in names[0] else names[0].split(".")[0]
              for names in groups]
    blocks = [f"inception{s}.{b}" for s, bs in (("3", "ab"), ("4", "abcde"), ("5", "ab")) for b in bs]
    assert firsts == ["stem", *blocks, "fc"]


def test_features_only() -> None:
    model = timm.create_model("googlenet", features_only=True, out_indices=(1, 2, 3, 4))
    feats = model(_batch())
    assert model.feature_info.channels() == [192, 480, 832, 1024]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert [f.shape[1:] for f in feats] == [(c, SIZE // r, SIZE // r) for c, r in
                                            zip([192, 480, 832, 1024], [4, 8, 16, 32], strict=True)]


def test_grad_checkpointing_gives_the_same_gradient() -> None:
    model = _model(num_classes=3, aux_logits=True, drop_rate=0.0, aux_drop_rate=0.0).train()
    x, y = _batch(), torch.tensor([0, 1])
    grads = []
    for enable in (False, True):
        net = copy.deepcopy(model)
        net.set_grad_checkpointing(enable)
        _loss(net(x), y, 0.3).backward()
        grads.append(net.stem.conv1.conv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_pretrained_cfg_follows_the_model() -> None:
    cfg = _model().pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["classifier"] == "fc" and cfg["url"] == TORCHVISION_URL
    data = timm.data.resolve_model_data_config(_model())
    assert data["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and data["std"] == timm.data.IMAGENET_DEFAULT_STD
    assert "googlenet.tv_in1k" in timm.list_pretrained("googlenet*")


# --- torchvision conversion -------------------------------------------------------------------------

def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine terms, so that a swapped BN key would change the output."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _torchvision(**kwargs: object) -> torchvision.models.GoogLeNet:
    torch.manual_seed(0)
    kwargs.setdefault("aux_logits", True)
    model = torchvision.models.googlenet(weights=None, init_weights=True, **kwargs)
    _randomise_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def tv_model() -> torchvision.models.GoogLeNet:
    return _torchvision(num_classes=10)


@pytest.fixture(scope="module")
def tv_file(tv_model: torchvision.models.GoogLeNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tv_googlenet.pth"
    torch.save(tv_model.state_dict(), path)
    return path


def test_key_map_covers_torchvision_one_to_one(tv_model: torchvision.models.GoogLeNet) -> None:
    assert set(TORCHVISION_KEY_MAP) == set(tv_model.state_dict())
    assert set(TORCHVISION_KEY_MAP.values()) == set(_model(num_classes=10, aux_logits=True).state_dict())


def test_unmapped_key_raises(tv_model: torchvision.models.GoogLeNet) -> None:
    state = dict(tv_model.state_dict(), **{"extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="extra.weight"):
        convert_torchvision_googlenet(state)


def test_converted_weights_match_torchvision_in_eval(tv_model: torchvision.models.GoogLeNet) -> None:
    model = _model(num_classes=10, aux_logits=True)
    model.load_state_dict(convert_torchvision_googlenet(tv_model.state_dict()), strict=True)
    x = _batch()
    with torch.no_grad():
        ours, theirs = model.eval()(x), tv_model.eval()(x)
    assert theirs.abs().max() > 1e-3  # a non-trivial output, so the comparison can fail
    assert (ours - theirs).abs().max() < 1e-5


def test_converted_aux_heads_match_torchvision_in_train_mode() -> None:
    tv = _torchvision(num_classes=10, dropout=0.0, dropout_aux=0.0).train()
    model = _model(num_classes=10, aux_logits=True, drop_rate=0.0, aux_drop_rate=0.0).train()
    load_torchvision_googlenet(model, tv.state_dict())
    x = _batch()
    with torch.no_grad():
        logits, aux1, aux2 = model(x)
        tv_out = tv(x)
    for ours, theirs in ((logits, tv_out.logits), (aux1, tv_out.aux_logits1), (aux2, tv_out.aux_logits2)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_transform_input_and_timm_pretrained_path_match_torchvision(tmp_path: Path) -> None:
    tv = _torchvision(transform_input=True).eval()  # 1000 classes, like the published weights
    path = tmp_path / "googlenet_tv.pth"
    torch.save(tv.state_dict(), path)
    model = timm.create_model("googlenet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.aux1 is None  # aux tensors dropped by the filter, load still strict
    x = _batch()
    with torch.no_grad():
        assert (model.eval()(x) - tv(x)).abs().max() < 1e-5


def test_timm_pretrained_with_new_class_count_keeps_the_trunk(tv_file: Path) -> None:
    model = timm.create_model("googlenet", pretrained=True, num_classes=3, aux_logits=True,
                              pretrained_cfg_overlay=dict(file=str(tv_file), num_classes=10))
    expected = torch.load(tv_file, weights_only=True)["inception4e.branch3.1.conv.weight"]
    torch.testing.assert_close(model.inception4.e.branch5x5.conv.conv.weight, expected)
    assert model.fc.out_features == model.aux1.fc2.out_features == 3


def test_load_from_path_and_file_url_into_model_without_aux(tv_model: torchvision.models.GoogLeNet,
                                                            tv_file: Path, tmp_path: Path) -> None:
    for source in (tv_file, tv_file.as_uri()):
        model = load_torchvision_googlenet(_model(num_classes=10), source, cache_dir=tmp_path)
        with torch.no_grad():
            assert (model.eval()(_batch()) - tv_model.eval()(_batch())).abs().max() < 1e-5
    assert (tmp_path / tv_file.name).is_file()


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_load_through_http_url(tv_model: torchvision.models.GoogLeNet, tv_file: Path,
                               http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    (root / tv_file.name).write_bytes(tv_file.read_bytes())
    model = load_torchvision_googlenet(_model(num_classes=10, aux_logits=True), f"{base}/{tv_file.name}",
                                       cache_dir=tmp_path / "cache")
    x = _batch()
    with torch.no_grad():
        assert (model.eval()(x) - tv_model.eval()(x)).abs().max() < 1e-5
    assert (tmp_path / "cache" / tv_file.name).is_file()


def test_http_download_checks_the_torch_hub_hash_prefix(tv_file: Path, http_root: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    base, root = http_root
    (root / "googlenet-00000000.pth").write_bytes(tv_file.read_bytes())
    with pytest.raises(SourceError, match="hash prefix"):
        load_torchvision_googlenet(_model(num_classes=10), f"{base}/googlenet-00000000.pth",
                                   cache_dir=tmp_path)
    assert not (tmp_path / "googlenet-00000000.pth").exists()
