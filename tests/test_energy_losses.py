"""Energies and losses against direct, separately written computations on random logits."""
import math

import pytest
import torch
import torch.nn.functional as F

from workloads import losses
from workloads.energy import delta_energy, joint_energy, marginal_energy

torch.manual_seed(0)
B, K = 16, 10


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    nat = torch.randn(B, K, generator=g, dtype=torch.float64) * 3
    adv = nat + torch.randn(B, K, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (B,), generator=g)
    return nat, adv, y


def direct_softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def direct_ce(row, label):
    return -math.log(direct_softmax(row)[label])


def direct_kl(nat_row, adv_row):
    p, q = direct_softmax(nat_row), direct_softmax(adv_row)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def rows(t):
    return t.tolist()


def test_energies_match_definitions(batch):
    nat, _, y = batch
    for i, row in enumerate(rows(nat)):
        assert marginal_energy(nat)[i].item() == pytest.approx(-math.log(sum(math.exp(v) for v in row)), rel=1e-5)
        assert joint_energy(nat, y)[i].item() == pytest.approx(-row[y[i]], rel=1e-6)


def test_cross_entropy_is_joint_minus_marginal_energy(batch):
    nat, _, y = batch
    ce = F.cross_entropy(nat, y, reduction="none")
    torch.testing.assert_close(ce.float(), joint_energy(nat, y) - marginal_energy(nat), rtol=1e-5, atol=1e-5)


def test_energies_are_fp32_under_autocast():
    logits = torch.randn(4, K).bfloat16()
    y = torch.zeros(4, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert marginal_energy(logits).dtype == torch.float32
        assert joint_energy(logits, y).dtype == torch.float32


def test_delta_energy_sign_convention():
    assert delta_energy(torch.tensor([-5.0]), torch.tensor([-3.0])).item() == -2.0  # x* has higher energy


def test_trades_loss(batch):
    nat, adv, y = batch
    beta = 6.0
    expected = sum(direct_ce(n, l) for n, l in zip(rows(nat), y.tolist())) / B \
        + beta * sum(direct_kl(n, a) for n, a in zip(rows(nat), rows(adv))) / B
    assert losses.trades_loss(nat, adv, y, beta).item() == pytest.approx(expected, rel=1e-5)


def test_mart_loss(batch):
    nat, adv, y = batch
    beta = 5.0
    total_bce, total_kl = 0.0, 0.0
    for n, a, label in zip(rows(nat), rows(adv), y.tolist()):
        pa, pn = direct_softmax(a), direct_softmax(n)
        wrong = max((p, k) for k, p in enumerate(pa) if k != label)[1]
        total_bce += -math.log(pa[label]) - math.log(1.0001 - pa[wrong] + 1e-12)
        kl = sum(pn_k * (math.log(pn_k) - math.log(pa_k + 1e-12)) for pn_k, pa_k in zip(pn, pa))
        total_kl += kl * (1.0000001 - pn[label])
    expected = total_bce / B + beta * total_kl / B
    assert losses.mart_loss(nat, adv, y, beta).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("variant", ["nat", "adv"])
def test_weat_loss(batch, variant):
    nat, adv, y = batch
    beta = 6.0
    total = 0.0
    for n, a, label in zip(rows(nat), rows(adv), y.tolist()):
        energy = -math.log(sum(math.exp(v) for v in n))
        w = 1.0 / math.log(1.0 + math.exp(abs(energy)))
        ce = direct_ce(n if variant == "nat" else a, label)
        total += w * ce + beta * w * direct_kl(n, a)
    assert losses.weat_loss(nat, adv, y, beta, variant).item() == pytest.approx(total / B, rel=1e-5)


def test_weat_weight_is_detached_and_finite_for_huge_energies():
    nat = torch.full((2, K), 500.0, requires_grad=True)  # |E| ~ 500: exp would overflow
    w = losses.weat_weight(nat)
    assert torch.isfinite(w).all() and not w.requires_grad


def test_weat_rejects_unknown_variant(batch):
    with pytest.raises(ValueError, match="variant"):
        losses.weat_loss(*batch, 6.0, "both")


def test_der_regularizer_per_sample(batch):
    nat, adv, y = batch
    gamma = 0.5
    reg = losses.der_regularizer(nat, adv, y, gamma)
    assert reg.shape == (B,)
    for i, (n, a, label) in enumerate(zip(rows(nat), rows(adv), y.tolist())):
        lse = lambda r: math.log(sum(math.exp(v) for v in r))  # noqa: E731
        de = -lse(n) + lse(a)
        de_y = -n[label] + a[label]
        assert reg[i].item() == pytest.approx(max(math.hypot(de, de_y) - gamma, 0.0), rel=1e-5, abs=1e-6)


def test_der_regularizer_gradient_is_finite_at_zero_delta():
    logits = torch.randn(4, K, requires_grad=True)
    reg = losses.der_regularizer(logits, logits, torch.zeros(4, dtype=torch.long), 0.0)
    reg.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_abnormal_adversarial_mask(batch):
    nat, adv, y = batch
    mask = losses.abnormal_adversarial(nat, adv, y)
    for i, (n, a, label) in enumerate(zip(rows(nat), rows(adv), y.tolist())):
        assert mask[i].item() == float(direct_ce(a, label) < direct_ce(n, label))


def test_jeat_loss(batch):
    _, adv, y = batch
    sgld = torch.randn(B, K, dtype=torch.float64)
    lse = lambda r: math.log(sum(math.exp(v) for v in r))  # noqa: E731
    expected = sum((-a[label] + lse(a)) for a, label in zip(rows(adv), y.tolist())) / B \
        + sum(-lse(a) for a in rows(adv)) / B - sum(-lse(s) for s in rows(sgld)) / B
    assert losses.jeat_loss(adv, sgld, y).item() == pytest.approx(expected, rel=1e-5)
