"""DER's training step against a separately written computation of the paper's formula.

docs/methods.md#der: L = mean_i CE(f(x*_i), y_i) + beta * mean_i m_i * max(||(dE_i, dE_y_i)|| - gamma, 0),
m_i = 1[CE(f(x*_i)) < CE(f(x0_i))] with x0 the attack's start point (x + d0 for RS-FGSM), the
gradient through f(x*) only (f(x) a constant in the hinge, benchmarks/der_study.py), none through the mask.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from orchestrator.config import compose_trial
from workloads.trial import Trial

TINY = ["epochs=1", "batch_size=64", "data.subset=256", "data.val_size=128", "data.probe_size=64",
        "data.test_size=128", "precision=fp32"]


class Rough(torch.nn.Module):
    """f(x) = W sin(k x): a loss surface that bends at the eps scale, as a network's does after CO, so
    that the sign step lowers the loss of some samples (abnormal adversarial examples)."""

    def __init__(self, pixels: int, k: float = 20.0):
        super().__init__()
        self.k, self.lin = k, torch.nn.Linear(pixels, 10)

    def forward(self, x):
        return self.lin(torch.sin(self.k * x.flatten(1)))


def rs_fgsm_by_hand(model, x, y, eps, alpha):
    """Wong et al.'s RS-FGSM written out: d0 ~ U(-eps, eps) clipped into the image, one sign step, project."""
    d0 = torch.empty_like(x).uniform_(-eps, eps)
    d0 = torch.max(torch.min(d0, 1 - x), -x)
    x0 = (x + d0).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x0), y, reduction="sum"), x0)
    d = (d0 + alpha * g.sign()).clamp(-eps, eps)
    d = torch.max(torch.min(d, 1 - x), -x)
    return x0.detach(), (x + d).detach()


def der_by_hand(model, x, x0, x_adv, y, beta, gamma):
    nat, adv = model(x).detach(), model(x_adv)  # f(x) a constant in the hinge
    with torch.no_grad():
        start = model(x0)
    e = lambda lg: -torch.logsumexp(lg, dim=1)  # noqa: E731
    de, de_y = e(nat) - e(adv), -nat.gather(1, y[:, None])[:, 0] + adv.gather(1, y[:, None])[:, 0]
    reg = torch.clamp(torch.sqrt(de**2 + de_y**2) - gamma, min=0)
    ce_adv = F.cross_entropy(adv, y, reduction="none")
    mask = (ce_adv.detach() < F.cross_entropy(start, y, reduction="none")).float()
    return ce_adv.mean() + beta * (mask * reg).mean(), (mask * reg).mean(), mask, nat


@pytest.mark.parametrize("beta, gamma", [(1.0, 0.0), (2.0, 0.3)])
def test_der_step_equals_the_formula_written_out(tmp_path, beta, gamma):
    trial = Trial(compose_trial([*TINY, "method=der", "attack.eps=0.3", f"method.beta={beta}",
                                 f"method.gamma={gamma}", f"out={tmp_path}"]))
    assert trial.attack == "rs_fgsm"
    x = trial.data.train.images[:64].float() / 255
    y = trial.data.train.labels[:64]
    # the step's arithmetic is the model's business: a model with AAEs at init, so that the mask matters
    torch.manual_seed(0)
    trial.model = Rough(x[0].numel())
    trial.opt = torch.optim.SGD(trial.model.parameters(), lr=0.01)
    ref = copy.deepcopy(trial.model)

    torch.manual_seed(7)
    step = trial.optimise(x, y, lr=0.01)
    torch.manual_seed(7)
    x0, x_adv = rs_fgsm_by_hand(ref, x, y, trial.cfg.attack.eps, trial.alpha)
    loss, reg, mask, nat = der_by_hand(ref, x, x0, x_adv, y, beta, gamma)
    loss.backward()

    torch.testing.assert_close(step.attack.x_adv, x_adv)
    torch.testing.assert_close(step.terms.loss, loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step.terms.reg, reg.detach(), rtol=1e-5, atol=1e-6)
    for p, q in zip(trial.model.parameters(), ref.parameters()):  # the same gradient paths
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    # the mask's start point is x0 = x + d0, not x: on this batch the two masks differ
    with torch.no_grad():
        ce_adv = F.cross_entropy(ref(x_adv), y, reduction="none")
        mask_from_x = (ce_adv < F.cross_entropy(nat, y, reduction="none")).float()
    assert 0 < mask.sum() < len(y) and not torch.equal(mask, mask_from_x)
