"""Batched, on-device data augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_crop_flip(
    x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop of the zero-padded batch plus random horizontal flip, per sample.

    x is [B, C, H, W] of any dtype; the result has the same shape, dtype and device.
    Offsets and flips are drawn on the generator's device (x's device if no generator).
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    if x.dim() != 4:
        raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    draw_on = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=draw_on).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=draw_on).to(x.device)
    flip = (torch.rand(b, generator=generator, device=draw_on) < 0.5).to(x.device)

    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the window right-to-left
    # One gather for the whole batch: out[b, c, i, j] = padded[b, c, rows[b, i], cols[b, j]].
    return padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
