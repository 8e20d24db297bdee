"""Energies of a classifier read as an energy-based model (docs/methods.md#energies).

All energies are computed in fp32, also when the logits come out of a bf16/fp16
autocast region: logsumexp of half-precision logits loses the small deltas
between natural and adversarial samples that the telemetry is about.
"""
from __future__ import annotations

import torch
from torch import Tensor


def marginal_energy(logits: Tensor) -> Tensor:
    """E(x) = -logsumexp_k f(x)[k], one value per sample (logits [..., B, C] -> [..., B])."""
    return -torch.logsumexp(logits.float(), dim=-1)


def joint_energy(logits: Tensor, y: Tensor) -> Tensor:
    """E(x, y) = -f(x)[y], one value per sample (logits [..., B, C], labels [B] -> [..., B])."""
    return -logits.float().gather(-1, y.expand(logits.shape[:-1])[..., None]).squeeze(-1)


def delta_energy(e_nat: Tensor, e_adv: Tensor) -> Tensor:
    """dE = E(x) - E(x*) (the WEAT/DER sign convention, docs/methods.md#delta-energy); marginal or joint energies."""
    return e_nat - e_adv
