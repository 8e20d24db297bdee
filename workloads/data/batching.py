"""Mini-batches drawn straight from on-device uint8 splits (no DataLoader, no per-sample Python)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .augment import augment_crop_flip
from .splits import Split


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches `batches` yields for n samples."""
    _check_batch_size(batch_size)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of (x float32 in [0, 1] [B, C, H, W], y int64 [B], ids int64 [B]).

    All three live on the split's device.

    shuffle permutes with torch.randperm(generator=...); augment applies crop+flip.
    """
    _check_batch_size(batch_size)
    # Validation above runs at call time; the generator below runs lazily.
    return _epoch(split, batch_size, shuffle, augment, generator, drop_last)


def _epoch(
    split: Split,
    batch_size: int,
    shuffle: bool,
    augment: bool,
    generator: torch.Generator | None,
    drop_last: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    n = len(split)
    device = split.images.device
    order = None
    if shuffle:
        draw_on = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=draw_on).to(device)
    for b in range(num_batches(n, batch_size, drop_last)):
        start, stop = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            images, y, ids = (t[start:stop] for t in (split.images, split.labels, split.ids))
        else:
            idx = order[start:stop]
            images, y, ids = split.images[idx], split.labels[idx], split.ids[idx]
        if augment:
            images = augment_crop_flip(images, generator=generator)  # on uint8: 4x less traffic
        yield images.float().div_(255), y, ids


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
