"""Auxiliary-loss weights: the backbone's default unless params say otherwise."""

from shared.models import aux_loss_weight


def test_backbone_defaults_and_overrides() -> None:
    assert aux_loss_weight("googlenet", None) == 0.3  # Szegedy et al. 2014
    assert aux_loss_weight("inception_v3", None) == 0.4  # torchvision's training recipe
    assert aux_loss_weight("tf_efficientnet_lite0", None) is None  # no auxiliary heads
    assert aux_loss_weight("googlenet", 0.5) == 0.5
    assert aux_loss_weight("googlenet", 0.0) is None  # 0 turns the heads off
