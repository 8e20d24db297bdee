"""Model registry; every model normalises its [0, 1] pixel input itself."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from .normalize import Normalize
from .preact_resnet import preact_resnet18
from .resnet import resnet18
from .small_cnn import small_cnn
from .wide_cnn import wide_cnn
from .wide_resnet import wide_resnet

# name -> builder(num_classes, in_channels, image_size) returning the un-normalised network.
MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "small_cnn": small_cnn,
    "wide_cnn": wide_cnn,
    "preact_resnet18": preact_resnet18,
    "resnet18": resnet18,
    "wrn28_10": wide_resnet(28, 10),
    "wrn34_10": wide_resnet(34, 10),
}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    """Sequential(normalize=Normalize(mean, std), net=MODELS[name](...)) taking [0, 1] inputs."""
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    for field, value, minimum in (
        ("num_classes", num_classes, 2),
        ("in_channels", in_channels, 1),
        ("image_size", image_size, 8),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(
            f"mean and std need one value per input channel ({in_channels}), "
            f"got {len(mean)} and {len(std)}"
        )
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            net=MODELS[name](num_classes, in_channels, image_size),
        )
    )


__all__ = ["MODELS", "Normalize", "build_model"]
