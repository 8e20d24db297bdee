"""Small two-conv CNN: the CPU default for 28x28 inputs (also fits 32x32)."""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """conv32-pool-conv64-pool-fc128-fc, no BatchNorm."""
    return two_conv_net(num_classes, in_channels, image_size, hidden=(128,))


def two_conv_net(num_classes: int, in_channels: int, image_size: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """conv32-pool-conv64-pool, then a ReLU fc layer of each width in `hidden`, then the classifier."""
    side = image_size // 4  # two 2x2 max-pools
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    width = 64 * side * side
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
