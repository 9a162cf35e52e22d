"""Model registry: ``build_model(arch, backbone, num_classes, ...)`` and the backbone table.

Like segmentation_models_pytorch, the constructor arguments *are* the model's config: they are
stored on the model (``model.config``) and in every checkpoint, so a checkpoint rebuilds itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet import EfficientNetLite0, lite0_weights_path
from .heads import DeepLabHead, DeepLabLiteHead, FPNHead
from .resnet import ResNet

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class BackboneEntry:
    """How to build a backbone, where its ImageNet weights come from and how it wants pixels scaled."""

    build: Callable[[int], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_weights: Callable[[], Path] | None = None


BACKBONES: dict[str, BackboneEntry] = {
    # Lite0 was trained on (x - 127.5) / 127.5 inputs.
    "efficientnet-lite0": BackboneEntry(
        EfficientNetLite0, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), lite0_weights_path
    ),
    "resnet50": BackboneEntry(lambda os_: ResNet("resnet50", os_), IMAGENET_MEAN, IMAGENET_STD),
    "resnet101": BackboneEntry(lambda os_: ResNet("resnet101", os_), IMAGENET_MEAN, IMAGENET_STD),
}

ARCHS: dict[str, Callable[[list[int], int, int], nn.Module]] = {
    "deeplab": lambda chans, n, os_: DeepLabHead(chans, n, output_stride=os_),
    "deeplab-lite": lambda chans, n, os_: DeepLabLiteHead(chans, n, output_stride=os_),
    "fpn": lambda chans, n, os_: FPNHead(chans, n),
}

# Each task's default decoder and pyramid stride, as in the paper: DeepLab (atrous, stride 16) for
# semantic classes, FPN (plain stride 32 pyramid) for class-agnostic foreground.
TASK_DEFAULTS = {"semantic": ("deeplab", 16), "foreground": ("fpn", 32)}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved in checkpoints and ONNX metadata."""

    arch: str = "deeplab"
    backbone: str = "efficientnet-lite0"
    num_classes: int = 21
    output_stride: int = 16
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)


class SegmentationModel(nn.Module):
    """Backbone + head; takes RGB pixels in [0, 255] (NCHW float) and returns logits at input size.

    Normalisation lives inside the model so the exported ONNX graph, the torch engine and training all
    feed the same raw pixels: there is no second preprocessing definition to drift out of sync.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        entry = _backbone_entry(config.backbone)
        if config.arch not in ARCHS:
            raise ValueError(f"unknown arch {config.arch!r}; valid: {sorted(ARCHS)}")
        if config.num_classes < 2:
            raise ValueError("num_classes must be at least 2 (background + one class)")
        self.config = config
        self.backbone = entry.build(config.output_stride)
        self.head = ARCHS[config.arch](self.backbone.out_channels, config.num_classes, config.output_stride)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone((pixels - self.mean) / self.std))
        return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, head) parameters: the paper trains the new head at 10x the backbone's rate."""
        return list(self.backbone.parameters()), list(self.head.parameters())


def _backbone_entry(name: str) -> BackboneEntry:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_model(
    arch: str = "deeplab",
    backbone: str = "efficientnet-lite0",
    num_classes: int = 21,
    output_stride: int | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> SegmentationModel:
    """Build a segmentation model; ``pretrained`` loads ImageNet backbone weights.

    ``weights`` is a backbone state-dict file (e.g. torchvision's resnet50 .pth); without it the
    backbone's packaged weights are used when it has any (EfficientNet-Lite0), else a ResNet starts
    from random init with a warning, since nothing may be downloaded at run time.
    """
    entry = _backbone_entry(backbone)
    if output_stride is None:
        output_stride = 32 if arch == "fpn" else 16
    config = ModelConfig(arch, backbone, num_classes, output_stride, entry.mean, entry.std)
    model = SegmentationModel(config)
    if weights is not None:
        load_backbone_weights(model.backbone, Path(weights))
    elif pretrained and entry.default_weights is not None:
        load_backbone_weights(model.backbone, entry.default_weights())
    elif pretrained:
        log.warning("no ImageNet weights for %s: pass weights=FILE; using random init", backbone)
    return model


def model_from_config(config: dict) -> SegmentationModel:
    """Rebuild an (untrained) model from a saved config; weights come from the checkpoint after."""
    return SegmentationModel(ModelConfig(**{**config, "mean": tuple(config["mean"]), "std": tuple(config["std"])}))


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load an ImageNet classifier state dict into ``backbone``, ignoring the classifier's own head.

    Every backbone tensor must be found with the right shape: a silent partial load would train from
    noise while looking pretrained, so a mismatch is an error that names the missing keys.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(
            f"weights file {path} does not fit this backbone: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(wrong)} with wrong shapes (e.g. {wrong[:3]})"
        )
    backbone.load_state_dict({k: state[k] for k in own})
    log.info("loaded backbone weights from %s (%d tensors)", path, len(own))


def state_checksum(module: nn.Module) -> str:
    """SHA-256 of a module's tensors in name order: a stable fingerprint of loaded weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
