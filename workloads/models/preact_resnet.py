"""PreActResNet-18 as used by Rice et al. 2020 and Wong et al. 2020 (fast_adversarial)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv x2; the projection shortcut taps the pre-activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """3x3 stem, four stages of two PreActBlocks (64-128-256-512), BN-ReLU, global pool, fc."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        # Adaptive pooling equals the original avg_pool2d(4) on 32x32 and also accepts 28x28.
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def preact_resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """PreActResNet-18 (image_size only needs to be >= 8)."""
    return PreActResNet18(num_classes, in_channels)
