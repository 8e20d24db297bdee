"""WideResNet (Zagoruyko & Komodakis) as in the TRADES / Madry CIFAR code: WRN-28-10, WRN-34-10."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class WideBlock(nn.Module):
    """Pre-activation block; a width change makes the shortcut a 1x1 conv of the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
            if in_planes != out_planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (self.shortcut(act) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """3x3 stem, three groups of (depth-4)/6 blocks of widths 16k/32k/64k, BN-ReLU, pool, fc."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        groups, in_planes = [], 16
        for width, stride in zip(widths, (1, 2, 2)):
            rest = (WideBlock(width, width, 1) for _ in range(blocks - 1))
            groups.append(nn.Sequential(WideBlock(in_planes, width, stride), *rest))
            in_planes = width
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The TRADES initialisation: He-normal (fan-out) convs, unit BN, zero fc bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.groups(self.conv1(x))))
        # Adaptive pooling equals the original avg_pool2d(8) on 32x32 and also accepts 28x28.
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def wide_resnet(depth: int, widen: int) -> Callable[[int, int, int], nn.Module]:
    """Builder with the registry signature for WRN-depth-widen."""

    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)

    build.__name__ = f"wrn{depth}_{widen}"
    return build
