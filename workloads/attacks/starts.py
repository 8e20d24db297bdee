"""Random starts of the evaluation attacks, drawn per sample from (seed, stream, sample id).

A sample's noise depends on the seed, its id and how many draws it has had, not on the batch it is in,
and never on the global RNG: the training loop's attacks draw from that, and an evaluation between two
epochs must leave it where it was (a resumed trial trains on exactly like an uninterrupted one).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

STARTS, TARGETS = 0, 1  # streams: attack starts, target classes of targeted attacks


class SampleNoise:
    """One numpy generator per sample, seeded by (seed, stream, id); every call draws the next values."""

    def __init__(self, seed: int, ids: Tensor, stream: int = STARTS):
        self.rngs = [np.random.default_rng([seed, stream, i]) for i in ids.tolist()]

    def __call__(self, x: Tensor, radius: float) -> Tensor:
        """U(-radius, radius) noise shaped like x (a `workloads.attacks.Noise`)."""
        u = np.stack([rng.random(x.shape[1:], dtype=np.float32) for rng in self.rngs])
        return torch.from_numpy(u).to(x.device, x.dtype).mul_(2 * radius).sub_(radius)

    def integers(self, low: int, high: int) -> Tensor:
        """One integer in [low, high) a sample (on the host)."""
        return torch.tensor([int(rng.integers(low, high)) for rng in self.rngs], dtype=torch.int64)
