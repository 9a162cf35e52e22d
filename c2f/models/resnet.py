"""ResNet-50/101 as a dilatable segmentation backbone with torchvision's parameter names.

torchvision is not a dependency (its PyPI wheels are tied to one torch build); keeping its names lets
users load a torchvision ``resnet50-*.pth`` file they already have, with no conversion step.
"""

from __future__ import annotations

import torch
from torch import nn

_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, ResNet v1.5)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet(nn.Module):
    """Feature extractor returning layer1..layer4 (strides 4, 8, 16, 32 before dilation)."""

    def __init__(self, name: str = "resnet50", output_stride: int = 32) -> None:
        super().__init__()
        if name not in _DEPTHS:
            raise ValueError(f"unknown ResNet {name!r}; valid: {sorted(_DEPTHS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, stride_now, dilation = 64, 4, 1
        for index, (repeats, width) in enumerate(zip(_DEPTHS[name], (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            if stride > 1 and stride_now >= output_stride:
                dilation *= stride
                stride = 1
            else:
                stride_now *= stride
            downsample = None
            if stride != 1 or in_ch != width * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(in_ch, width * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(width * 4)
                )
            blocks = [Bottleneck(in_ch, width, stride, dilation, downsample)]
            blocks += [Bottleneck(width * 4, width, 1, dilation, None) for _ in range(repeats - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_ch = width * 4
        self.out_channels = [256, 512, 1024, 2048]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features
