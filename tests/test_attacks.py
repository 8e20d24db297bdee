"""Attacks respect the eps-ball (N-FGSM excepted) and [0,1], and raise what they ascend; on real data."""
import pytest
import torch
import torch.nn.functional as F

from workloads.attacks import ATTACKS, default_alpha
from workloads.data import DATASETS, batches, load_dataset
from workloads.energy import joint_energy
from workloads.losses import kl_per_sample
from workloads.models import build_model

EPS = 0.1


@pytest.fixture(scope="module")
def model_and_batch():
    """A small CNN trained 1 epoch (ERM) on 2,000 Fashion-MNIST images, and a held-out batch."""
    torch.manual_seed(0)
    data = load_dataset("fashion_mnist", subset=2000, val_size=256, probe_size=64, seed=0)
    info = DATASETS["fashion_mnist"]
    model = build_model("small_cnn", 10, 1, 28, info.mean, info.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y, _ in batches(data.train, 128, shuffle=True, generator=torch.Generator().manual_seed(0)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    x, y, _ = next(batches(data.val, 256, shuffle=False))
    return model.eval(), x, y


def run(name, model, x, y):
    alpha = default_alpha(name, EPS)
    kwargs = {"steps": 10} if name in ("pgd", "trades_kl") else {}
    torch.manual_seed(1)
    return ATTACKS[name](model, x, y, EPS, alpha, **kwargs)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_stays_in_image_and_ball(model_and_batch, name):
    model, x, y = model_and_batch
    x_adv = run(name, model, x, y).x_adv
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    dist = (x_adv - x).abs().amax()
    if name == "n_fgsm":  # by design: noise 2*eps plus a step of eps, no projection
        assert EPS < dist <= 3 * EPS + 1e-6
    else:
        assert dist <= EPS + 1e-6


@pytest.mark.parametrize("name", ["fgsm", "rs_fgsm", "n_fgsm", "pgd"])
def test_attack_raises_cross_entropy(model_and_batch, name):
    model, x, y = model_and_batch
    with torch.no_grad():
        before = F.cross_entropy(model(x), y)
        after = F.cross_entropy(model(run(name, model, x, y).x_adv), y)
    assert after > before + 0.1


def test_pgd_beats_fgsm(model_and_batch):
    model, x, y = model_and_batch
    with torch.no_grad():
        acc = {n: (model(run(n, model, x, y).x_adv).argmax(1) == y).float().mean() for n in ("fgsm", "pgd")}
    assert acc["pgd"] <= acc["fgsm"]


def test_pgd_restarts_never_weaker(model_and_batch):
    model, x, y = model_and_batch
    torch.manual_seed(2)
    one = ATTACKS["pgd"](model, x, y, EPS, EPS / 4, steps=5, restarts=1).x_adv
    torch.manual_seed(2)
    three = ATTACKS["pgd"](model, x, y, EPS, EPS / 4, steps=5, restarts=3).x_adv
    with torch.no_grad():
        l1 = F.cross_entropy(model(one), y, reduction="none")
        l3 = F.cross_entropy(model(three), y, reduction="none")
    assert (l3 >= l1 - 1e-5).float().mean() > 0.9 and l3.mean() >= l1.mean()
    assert (three - x).abs().amax() <= EPS + 1e-6


def test_trades_attack_raises_kl_and_restores_train_mode(model_and_batch):
    model, x, y = model_and_batch
    model.train()
    x_adv = run("trades_kl", model, x, y).x_adv
    assert model.training
    model.eval()
    with torch.no_grad():
        kl = kl_per_sample(model(x), model(x_adv)).mean()
    assert kl > 0.05


def test_energy_attack_raises_joint_energy(model_and_batch):
    model, x, y = model_and_batch
    with torch.no_grad():
        before = joint_energy(model(x), y).mean()
        after = joint_energy(model(run("energy", model, x, y).x_adv), y).mean()
    assert after > before


def test_attacks_leave_parameter_gradients_alone(model_and_batch):
    model, x, y = model_and_batch
    model.zero_grad(set_to_none=True)
    run("pgd", model, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_start_logits_are_natural(model_and_batch):
    model, x, y = model_and_batch
    result = run("fgsm", model, x, y)
    assert result.start_is_natural
    with torch.no_grad():
        torch.testing.assert_close(result.logits_start, model(x))
