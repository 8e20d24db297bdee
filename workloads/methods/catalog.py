"""Every AT method of the three papers and their baselines, one short function each (docs/methods.md#methods).

Each registration names the `method.*` fields the method reads (`knobs`): only those, and the fields of its
attack (`workloads.attacks.ATTACK_KNOBS`), go into its trial id and its ranking (`read_fields`);
tests/test_method_knobs.py checks that no other field changes a training step.
"""
from __future__ import annotations

import torch.nn.functional as F

from workloads import losses
from workloads.attacks import SINGLE_STEP
from workloads.methods.registry import Logits, MethodConfig, Terms, register


def _ce_adv(lg: Logits, p: MethodConfig) -> Terms:
    """CE(f(x*), y): FGSM-AT, RS-FGSM, N-FGSM, PGD-AT (Madry eq. 2.1), PreJEAT (docs/methods.md#adversarial-ce)."""
    return Terms(F.cross_entropy(lg.adv.float(), lg.y))


for _name, _attack in [("fgsm", "fgsm"), ("rs_fgsm", "rs_fgsm"), ("n_fgsm", "n_fgsm"), ("pgd", "pgd"),
                       ("prejeat", "energy")]:
    register(_name, _attack)(_ce_adv)


@register("erm", None, adversarial=False)
def erm(lg: Logits, p: MethodConfig) -> Terms:
    """ERM: CE(f(x), y); `adv` is f(x) itself (no attack; docs/methods.md#erm)."""
    return Terms(F.cross_entropy(lg.adv.float(), lg.y))


@register("trades", "trades_kl", knobs=("beta",), uses_nat=True)
def trades(lg: Logits, p: MethodConfig) -> Terms:
    """TRADES: CE(x) + beta * KL(p(x) || p(x*)) (docs/methods.md#trades)."""
    return Terms(losses.trades_loss(lg.nat, lg.adv, lg.y, p.beta),
                 reg=losses.kl_per_sample(lg.nat, lg.adv).mean().detach())


@register("mart", "pgd", knobs=("beta",), uses_nat=True)
def mart(lg: Logits, p: MethodConfig) -> Terms:
    """MART: BCE(x*) + beta * KL * (1 - p_y(x)) (docs/methods.md#mart)."""
    return Terms(losses.mart_loss(lg.nat, lg.adv, lg.y, p.beta))


def _weat(variant: str):
    def weat(lg: Logits, p: MethodConfig) -> Terms:
        """WEAT-NAT / WEAT-ADV: energy-weighted TRADES, w = 1 / softplus(|E(x)|) (docs/methods.md#weat)."""
        return Terms(losses.weat_loss(lg.nat, lg.adv, lg.y, p.beta, variant),
                     reg=losses.kl_per_sample(lg.nat, lg.adv).mean().detach(),
                     weat_w=losses.weat_weight(lg.nat).mean())

    return weat


register("weat_nat", "trades_kl", knobs=("beta",), uses_nat=True)(_weat("nat"))
register("weat_adv", "trades_kl", knobs=("beta",), uses_nat=True)(_weat("adv"))


@register("der", None, knobs=("beta", "gamma", "base"), uses_nat=True)
def der(lg: Logits, p: MethodConfig) -> Terms:
    """DER: CE(x*) + beta * mean_i m_i * max(||[dE(x_i), dE(x_i,y_i)]|| - gamma, 0) (docs/methods.md#der).

    m_i = 1[AAE_i] on single-step AT (`method.base` fgsm/rs_fgsm/n_fgsm), m_i = 1 on PGD-AT.
    """
    reg = losses.der_regularizer(lg.nat, lg.adv, lg.y, p.gamma)
    if p.base in SINGLE_STEP:
        mask = losses.abnormal_adversarial(lg.start, lg.adv.detach(), lg.y)
    else:
        mask = reg.new_ones(reg.shape)
    return Terms(losses.der_loss(lg.adv, lg.y, reg, mask, p.beta), reg=(mask * reg).mean().detach())


# SGLD settings: read by the training loop (workloads/trial.py, workloads/methods/replay_sgld.py), not by the loss
@register("jeat", "energy", knobs=("sgld_steps", "sgld_step_size", "sgld_noise", "buffer_size", "reinit"),
          uses_sgld=True)
def jeat(lg: Logits, p: MethodConfig) -> Terms:
    """JEAT: [E(x*,y) - E(x*)] + [E(x*) - E(x_sgld)] (eq. 19, Algorithm 1; docs/methods.md#jeat)."""
    from workloads.energy import marginal_energy

    return Terms(losses.jeat_loss(lg.adv, lg.sgld, lg.y),
                 reg=(marginal_energy(lg.adv).mean() - marginal_energy(lg.sgld).mean()).detach())
