"""Adversarial-training losses as pure functions of logits (docs/methods.md#methods).

Each function reads like its equation; `logits_nat = f(x)`, `logits_adv = f(x*)`.
All return the batch mean, except `der_regularizer` (per sample).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from workloads.energy import delta_energy, joint_energy, marginal_energy


def kl_per_sample(logits_nat: Tensor, logits_adv: Tensor) -> Tensor:
    """KL(p(x) || p(x*)) summed over classes, one value per sample (TRADES' KLDivLoss, sum)."""
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits_nat.float(), dim=1),
                    reduction="none").sum(dim=1)


def trades_loss(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """TRADES (Zhang et al. 2019; docs/methods.md#trades): CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x*_i))."""
    return F.cross_entropy(logits_nat.float(), y) + beta * kl_per_sample(logits_nat, logits_adv).mean()


def mart_loss(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """MART (Wang et al. 2020; docs/methods.md#mart): BCE(p(x*), y) + beta * mean_i KL_i * (1 - p_y(x_i)).

    BCE(p(x*), y) = CE(x*) + NLL(log(1 - p(x*)), y_hat), y_hat the most probable wrong class;
    the 1.0001 / 1e-12 constants are those of the MART reference code.
    """
    p_adv, p_nat = F.softmax(logits_adv.float(), dim=1), F.softmax(logits_nat.float(), dim=1)
    top2 = p_adv.argsort(dim=1)[:, -2:]
    y_hat = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(logits_adv.float(), y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), y_hat)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(dim=1)
    p_true = p_nat.gather(1, y[:, None]).squeeze(1)
    return bce + beta * (kl * (1.0000001 - p_true)).mean()


def weat_weight(logits_nat: Tensor) -> Tensor:
    """WEAT sample weight w_i = 1 / log(1 + exp(|E(x_i)|)), detached (softplus avoids exp overflow)."""
    return 1.0 / F.softplus(marginal_energy(logits_nat).abs().detach())


def weat_loss(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, beta: float, variant: str) -> Tensor:
    """WEAT (Mirza et al. 2024, ECCV code; docs/methods.md#weat).

    mean_i w_i CE(x'_i) + beta * mean_i w_i KL(p(x_i) || p(x*_i)), w_i = `weat_weight`.

    x' = x for variant "nat" (WEAT-NAT), x' = x* for variant "adv" (WEAT-ADV).
    """
    if variant not in ("nat", "adv"):
        raise ValueError(f"weat_loss variant must be 'nat' or 'adv', got {variant!r}")
    w = weat_weight(logits_nat)
    ce = F.cross_entropy((logits_nat if variant == "nat" else logits_adv).float(), y, reduction="none")
    return (w * ce).mean() + beta * (w * kl_per_sample(logits_nat, logits_adv)).mean()


def der_regularizer(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, gamma: float) -> Tensor:
    """DER hinge per sample (docs/methods.md#der): max(||[dE(x_i), dE(x_i, y_i)]||_2 - gamma, 0).

    f(x) enters as a constant: the hinge pulls E(x*) towards E(x). With its gradient through f(x)
    too, every beta and gamma tried lost robust accuracy by moving f(x) instead, and at beta 1 DER
    collapsed in all three dev seeds (benchmarks/der_study.py).
    """
    logits_nat = logits_nat.detach()
    de = delta_energy(marginal_energy(logits_nat), marginal_energy(logits_adv))
    de_y = delta_energy(joint_energy(logits_nat, y), joint_energy(logits_adv, y))
    return F.relu(torch.linalg.vector_norm(torch.stack([de, de_y], dim=1), dim=1) - gamma)


def der_loss(logits_adv: Tensor, y: Tensor, reg: Tensor, mask: Tensor, beta: float) -> Tensor:
    """DER on top of AT: CE(x*) + beta * mean_i 1[i selected] * L_dE_i (mask = AAE for single-step, all for multi-step)."""
    return F.cross_entropy(logits_adv.float(), y) + beta * (mask * reg).mean()


def abnormal_adversarial(logits_start: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    """AAE mask (Lin et al., AAER; docs/methods.md#aae): the inner step *decreased* the loss, CE(x*) < CE(x0)."""
    ce = lambda logits: F.cross_entropy(logits.float(), y, reduction="none")  # noqa: E731
    return (ce(logits_adv) < ce(logits_start)).float()


def jeat_loss(logits_adv: Tensor, logits_sgld: Tensor, y: Tensor) -> Tensor:
    """JEAT (Zhu et al., eq. 19 / Algorithm 1; docs/methods.md#jeat).

    -log p(x*, y) = [E(x*,y) - E(x*)] + [E(x*) - E(x_sgld)].

    The second bracket is the maximum-likelihood gradient of log p(x) (eq. 20) with
    x_sgld drawn from the model by SGLD.
    """
    e_adv = marginal_energy(logits_adv)
    return (joint_energy(logits_adv, y) - e_adv).mean() + (e_adv.mean() - marginal_energy(logits_sgld).mean())
