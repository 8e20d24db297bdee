"""Small two-conv CNN: the CPU default for 28x28 inputs (also fits 32x32)."""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """conv32-pool-conv64-pool-fc128-fc, no BatchNorm."""
    side = image_size // 4  # two 2x2 max-pools
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
