"""Sign-gradient attacks: FGSM, RS-FGSM, N-FGSM, PGD, the TRADES KL maximiser and the JEAT energy attack.

Formulas and defaults, one section each: docs/methods.md#attacks.

Gradients are taken with `torch.autograd.grad` w.r.t. the perturbation only, so
the model's parameter gradients are never touched by an attack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.energy import joint_energy
from workloads.losses import kl_per_sample


@dataclass
class AttackResult:
    x_adv: Tensor  # detached adversarial batch
    logits_start: Tensor | None = None  # detached f(x0) at the attack's starting point
    start_is_natural: bool = False  # x0 == x, so logits_start are the natural logits


Objective = Callable[[Tensor], Tensor]  # logits -> per-sample value to ascend
Noise = Callable[[Tensor, float], Tensor]  # (x, r) -> U(-r, r) noise shaped like x: an attack's random start


def _ce(y: Tensor) -> Objective:
    return lambda logits: F.cross_entropy(logits.float(), y, reduction="none")


def _ascend(model: nn.Module, x: Tensor, delta: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
    """Gradient of sum_i objective(f(x + delta))_i w.r.t. delta, and the (detached) logits."""
    with torch.enable_grad():  # attacks also run inside no_grad evaluation code
        delta.requires_grad_(True)
        logits = model(x + delta)
        (grad,) = torch.autograd.grad(objective(logits).sum(), delta)
    delta.requires_grad_(False)
    return grad, logits.detach().clone()  # a copy: CUDA-graph replays (compile=reduce-overhead) reuse the output


def uniform(x: Tensor, radius: float) -> Tensor:
    """U(-radius, radius) from the global RNG: the training attacks' starts (evaluation draws `SampleNoise`)."""
    return torch.empty_like(x).uniform_(-radius, radius)


def _into_image(x: Tensor, delta: Tensor) -> Tensor:
    """Clip delta so that x + delta lies in [0,1] (in place)."""
    return delta.clamp_(-x, 1 - x)


def _sign_step(delta: Tensor, grad: Tensor, alpha: float, eps: float, lo: Tensor, hi: Tensor) -> Tensor:
    """delta = clip(clip(delta + alpha * sign(grad), -eps, eps), -x, 1 - x), in place, no temporaries.

    `lo, hi = -x, 1 - x` are computed once per attack rather than once per step.
    """
    return delta.add_(grad.sign_(), alpha=alpha).clamp_(-eps, eps).clamp_(lo, hi)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None) -> AttackResult:
    """FGSM, zero init: x* = clip01(x + alpha * sign(grad_x CE(x, y))), alpha = eps by default."""
    delta = torch.zeros_like(x)
    grad, logits = _ascend(model, x, delta, _ce(y))
    x_adv = (x + (alpha or eps) * grad.sign()).clamp_(0, 1)
    return AttackResult(x_adv, logits, start_is_natural=True)


def rs_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float) -> AttackResult:
    """RS-FGSM (Wong et al.): d ~ U(-eps, eps); d = clip(d + alpha * sign(grad CE(x+d)), -eps, eps); clip01."""
    delta, logits = _projected_ascent(model, x, _into_image(x, uniform(x, eps)), _ce(y), eps, alpha, steps=1)
    return AttackResult((x + delta).detach(), logits)


def n_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, noise: float = 2.0) -> AttackResult:
    """N-FGSM (de Jorge et al.): d ~ U(-k eps, k eps), one step of alpha, no projection to the ball; clip01."""
    delta = uniform(x, noise * eps)
    grad, logits = _ascend(model, x, delta, _ce(y))
    return AttackResult((x + delta + alpha * grad.sign()).clamp_(0, 1), logits)


def energy_attack(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float) -> AttackResult:
    """JEAT eq. 18: d ~ U(-eps, eps); d = clip(d + alpha * sign(grad_x E(x+d, y)), -eps, eps) - ascends E(x,y) only."""
    delta, logits = _projected_ascent(model, x, _into_image(x, uniform(x, eps)), lambda lg: joint_energy(lg, y),
                                      eps, alpha, steps=1)
    return AttackResult((x + delta).detach(), logits)


def _projected_ascent(model: nn.Module, x: Tensor, delta: Tensor, objective: Objective,
                      eps: float, alpha: float, steps: int) -> tuple[Tensor, Tensor | None]:
    logits_start, lo, hi = None, -x, 1 - x
    for _ in range(steps):
        grad, logits = _ascend(model, x, delta, objective)
        logits_start = logits if logits_start is None else logits_start
        _sign_step(delta, grad, alpha, eps, lo, hi)
    return delta, logits_start


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int = 10,
        restarts: int = 1, random_start: bool = True, start: Noise = uniform) -> AttackResult:
    """PGD-k (Madry; Rice et al.): uniform start in the ball, k sign steps of alpha, project, clip01.

    With several restarts each sample keeps the restart with the highest final loss. `start` draws
    the random starts, one call a restart.
    """
    if restarts == 1:  # training: no need for the extra forward that picks the best restart
        delta = _into_image(x, start(x, eps)) if random_start else torch.zeros_like(x)
        delta, logits_start = _projected_ascent(model, x, delta, _ce(y), eps, alpha, steps)
        return AttackResult((x + delta).detach(), logits_start, start_is_natural=not random_start)
    best, best_loss, logits_start = x.clone(), torch.full_like(y, -torch.inf, dtype=torch.float32), None
    for _ in range(restarts):
        delta = _into_image(x, start(x, eps)) if random_start else torch.zeros_like(x)
        delta, first = _projected_ascent(model, x, delta, _ce(y), eps, alpha, steps)
        logits_start = first if logits_start is None else logits_start
        with torch.no_grad():
            loss = F.cross_entropy(model(x + delta).float(), y, reduction="none")
        better = loss > best_loss
        best[better], best_loss[better] = (x + delta)[better], loss[better]
    return AttackResult(best, logits_start)


def trades_kl(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int = 10) -> AttackResult:
    """TRADES inner max: start x + 0.001 N(0,I), maximise KL(p(x) || p(x')) by projected sign steps.

    As in the TRADES code the model is in eval mode during the attack.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits_nat = model(x).detach()
    delta = _into_image(x, (0.001 * torch.randn_like(x)).clamp_(-eps, eps))
    delta, _ = _projected_ascent(model, x, delta, lambda lg: kl_per_sample(logits_nat, lg), eps, alpha, steps)
    model.train(was_training)
    return AttackResult((x + delta).detach())
