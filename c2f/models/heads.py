"""Decoder heads: DeepLab's ASPP, full and CPU-sized (semantic task), and an FPN (foreground task).

All take the backbone's pyramid ``[stride4, stride8, stride16, stride32]`` (the last two may be
dilated to a coarser nominal stride) and return logits at stride 4 (stride 8 for the lite DeepLab);
the model upsamples to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    """Image-level context branch; global pooling exports to ONNX as GlobalAveragePool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        # No BatchNorm here: a 1x1 pooled map with batch size 1 would make BN statistics degenerate.
        self.conv = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x)).expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated convolutions plus image pooling."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_ch, out_ch)]
        branches += [_conv_bn_relu(in_ch, out_ch, 3, rate) for rate in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(_conv_bn_relu(out_ch * len(branches), out_ch), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class _DeepLabDecoder(nn.Module):
    """DeepLab v3+'s decoding: ASPP on the deepest map, upsampled to and fused with a shallower one.

    Subclasses build ``aspp``, ``low_level``, ``fuse`` and ``classifier`` and say which backbone
    map (``low_level_index``) gives the edges.
    """

    low_level_index: int
    aspp: nn.Module
    low_level: nn.Module
    fuse: nn.Module
    classifier: nn.Module

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[self.low_level_index])
        deep = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([deep, low], dim=1)))

    @staticmethod
    def aspp_rates(output_stride: int) -> tuple[int, int, int]:
        """ASPP's atrous rates for the backbone's output stride (doubled at stride 8)."""
        return (6, 12, 18) if output_stride >= 16 else (12, 24, 36)


class DeepLabHead(_DeepLabDecoder):
    """DeepLab v3+ head: ASPP on the deepest map, fused with the stride-4 map for sharper edges."""

    low_level_index = 0  # stride 4

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        output_stride: int = 16,
        channels: int = 256,
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        rates = self.aspp_rates(output_stride)
        self.aspp = ASPP(in_channels[-1], channels, rates)
        self.low_level = _conv_bn_relu(in_channels[self.low_level_index], low_level_channels)
        self.fuse = nn.Sequential(
            _conv_bn_relu(channels + low_level_channels, channels, 3),
            _conv_bn_relu(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)


def _separable(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (optionally atrous) then pointwise: about a ninth of a full 3x3 convolution's cost."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        _conv_bn_relu(in_ch, out_ch),
    )


class SeparableASPP(ASPP):
    """ASPP whose atrous branches are depthwise-separable convolutions."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...]) -> None:
        super().__init__(in_ch, out_ch, rates)
        for index, rate in enumerate(rates, start=1):
            self.branches[index] = _separable(in_ch, out_ch, rate)


class DeepLabLiteHead(_DeepLabDecoder):
    """A CPU-sized DeepLab v3+ head: separable ASPP (128 channels), fused with the stride-8 map.

    The full head fuses 256 channels at stride 4 with two 3x3 convolutions, which costs several
    times the EfficientNet-Lite0 backbone at 320 px; this one costs a fraction of it, so a CPU can
    train at the input sizes that 21-class photographs need. Logits come out at stride 8.
    """

    low_level_index = 1  # stride 8

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        output_stride: int = 16,
        channels: int = 128,
        low_level_channels: int = 32,
    ) -> None:
        super().__init__()
        rates = self.aspp_rates(output_stride)
        self.aspp = SeparableASPP(in_channels[-1], channels, rates)
        self.low_level = _conv_bn_relu(in_channels[self.low_level_index], low_level_channels)
        self.fuse = _separable(channels + low_level_channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)


class FPNHead(nn.Module):
    """Feature pyramid decoder (Kirillov et al. panoptic FPN style) summed at stride 4."""

    def __init__(self, in_channels: list[int], num_classes: int, pyramid: int = 128, channels: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(pyramid, channels, 3) for _ in in_channels)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        size = laterals[0].shape[-2:]
        fused = sum(
            F.interpolate(smooth(lat), size=size, mode="bilinear", align_corners=False)
            for smooth, lat in zip(self.smooth, laterals)
        )
        return self.classifier(fused)
