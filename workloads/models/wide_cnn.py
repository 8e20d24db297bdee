"""Wide-FC CNN: small_cnn's convolutions with a 2x2048 classifier, for robust-overfitting runs on CPU.

small_cnn cannot fit a PGD-AT training set even at 2,000 Fashion-MNIST images, so it never overfits
robustly (Rice et al.'s RO needs more capacity than data). The capacity here sits in the fully
connected layers, which cost little per parameter: about 3x small_cnn's multiply-adds, 25x its
parameters.
"""

from __future__ import annotations

from torch import nn

from .small_cnn import two_conv_net


def wide_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """conv32-pool-conv64-pool-fc2048-fc2048-fc, no BatchNorm."""
    return two_conv_net(num_classes, in_channels, image_size, hidden=(2048, 2048))
