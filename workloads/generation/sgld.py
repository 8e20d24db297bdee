"""Class-conditional SGLD with a classifier read as an energy-based model (JEAT eq. 16/17).

Formula, defaults and the starting points: docs/methods.md#sgld-generation.

    energy "joint" (JEAT eq. 17):  U(x) = E(x,y)        = -f(x)[y]
    energy "ce"    (JEAT eq. 16):  U(x) = E(x,y) - E(x) = CE(f(x), y)   (Santurkar et al.)

    step:  g = grad_x U(x)   (optionally rescaled per sample to L2 norm <= clip_grad)
           v = momentum * v - (step_size / 2) * g
           x = clip01(x + v + noise * N(0, I))

With momentum 0 this is eq. 16/17 exactly when noise = sqrt(step_size); the JEM/JEAT
practice (and the default here) decouples them: step_size 1, noise 0.01.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.energy import joint_energy

ENERGIES = ("joint", "ce")


def energy_fn(kind: str):
    """logits, y -> per-sample energy that SGLD descends."""
    if kind == "joint":
        return joint_energy
    if kind == "ce":
        return lambda logits, y: F.cross_entropy(logits.float(), y, reduction="none")
    raise ValueError(f"energy must be one of {ENERGIES}, got {kind!r}")


@dataclass
class SGLDConfig:
    steps: int = 100
    step_size: float = 1.0
    noise: float = 0.01
    energy: str = "joint"
    momentum: float = 0.0
    clip_grad: float | None = None  # per-sample L2 norm bound on the gradient of each step

    def validate(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if not self.step_size > 0:
            raise ValueError(f"step-size must be positive, got {self.step_size}")
        if self.noise < 0:
            raise ValueError(f"noise must be non-negative, got {self.noise}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip-grad must be positive, got {self.clip_grad}")
        energy_fn(self.energy)


@dataclass
class SGLDResult:
    x: Tensor  # final samples in [0,1]
    energy_start: Tensor  # per-sample energy U(x0)
    energy_end: Tensor  # per-sample energy U(x_T)
    trace: list[float] = field(default_factory=list)  # batch-mean energy before each step and at the end


def sgld(model: nn.Module, x0: Tensor, y: Tensor, cfg: SGLDConfig,
         generator: torch.Generator | None = None) -> SGLDResult:
    """Run `cfg.steps` SGLD steps from x0 on the energy of (x, y); model in eval mode, its weights untouched."""
    cfg.validate()
    energy = energy_fn(cfg.energy)
    was_training = model.training
    model.eval()
    x = x0.detach().clone().clamp_(0, 1)
    v = torch.zeros_like(x)
    trace: list[float] = []
    start = None
    for _ in range(cfg.steps):
        with torch.enable_grad():
            x.requires_grad_(True)
            e = energy(model(x), y)
            (grad,) = torch.autograd.grad(e.sum(), x)
        x = x.detach()
        e = e.detach()
        start = e if start is None else start
        trace.append(e.mean().item())
        if cfg.clip_grad is not None:
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            grad = grad * (cfg.clip_grad / norm).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
        v = cfg.momentum * v - (cfg.step_size / 2) * grad
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device) if generator is not None \
            else torch.randn_like(x)
        x = (x + v + cfg.noise * noise).clamp_(0, 1)
    with torch.no_grad():
        end = energy(model(x), y).detach()
    trace.append(end.mean().item())
    model.train(was_training)
    return SGLDResult(x, start if start is not None else end, end, trace)
