"""SGLD sampling from the classifier's p(x) with a replay buffer (JEAT Algorithm 1, JEM defaults).

The step is JEM's, x - step_size * grad E(x) + noise * N(0,I), not Algorithm 1's
x - (alpha/2) grad E(x) + sqrt(alpha) N(0,I): docs/methods.md#sgld-jeat.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from workloads.energy import marginal_energy


class ReplayBuffer:
    """Persistent SGLD chains: `sample` continues stored chains (restarting a share `reinit` from U(0,1))."""

    def __init__(self, shape: tuple[int, ...], size: int, reinit: float, device: torch.device | str):
        self.samples = torch.rand(size, *shape, device=device)
        self.reinit = reinit

    def sample(self, model: nn.Module, n: int, steps: int, step_size: float, noise: float) -> Tensor:
        """n samples after `steps` SGLD steps x <- clip01(x - step_size * grad E(x) + noise * N(0,I))."""
        idx = torch.randint(len(self.samples), (n,), device=self.samples.device)
        x = self.samples[idx]
        fresh = torch.rand(n, device=x.device) < self.reinit
        x = torch.where(fresh.view(-1, *[1] * (x.dim() - 1)), torch.rand_like(x), x)
        was_training = model.training
        model.eval()
        for _ in range(steps):
            with torch.enable_grad():
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(marginal_energy(model(x)).sum(), x)
            x = x.detach().sub_(grad, alpha=step_size).add_(torch.randn_like(x), alpha=noise).clamp_(0, 1)
        model.train(was_training)
        self.samples[idx] = x
        return x

    def state_dict(self) -> dict[str, Tensor]:
        return {"samples": self.samples}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.samples.copy_(state["samples"])
