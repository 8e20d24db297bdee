"""A tiny image grid writer (numpy + Pillow): one row per class, no torchvision needed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


def grid_array(x: Tensor, rows: int, pad: int = 2, scale: int = 2, pad_value: float = 0.5) -> np.ndarray:
    """uint8 [H', W', C] grid of x [rows*cols, C, H, W] in [0,1], filled row by row; pixels scaled up `scale`x."""
    n, c, h, w = x.shape
    cols = -(-n // rows)
    imgs = x.detach().cpu().clamp(0, 1).numpy()
    if scale > 1:
        imgs = imgs.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[top:top + h, left:left + w] = imgs[i].transpose(1, 2, 0)
    return (out * 255 + 0.5).astype(np.uint8)


def save_grid(x: Tensor, path: str | Path, rows: int, pad: int = 2, scale: int = 2) -> Path:
    """Write x as a PNG grid with `rows` rows (grayscale for 1-channel images)."""
    from PIL import Image

    arr = grid_array(x, rows, pad, scale)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)
    return path
