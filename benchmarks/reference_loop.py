"""Baseline training loops written the way the papers' public code does it.

Only for benchmarks: a CPU `DataLoader` over a per-sample `Dataset` (ToTensor-like
uint8 -> float on every `__getitem__`), fp32, and per-batch `.item()` logging, with
each method's loop copied whole as in locuslab/fast_adversarial (FGSM, PGD-AT),
yaodongyu/TRADES and a JEM-style JEAT loop.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class UInt8Images(Dataset):
    """Per-sample access to uint8 images, converted like torchvision's ToTensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.cpu(), labels.cpu()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].float().div(255), int(self.labels[i])


def loader(images, labels, batch_size=128, workers=2) -> DataLoader:
    return DataLoader(UInt8Images(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def clamp(x, lower, upper):
    return torch.max(torch.min(x, upper), lower)


def attack_pgd(model, X, y, epsilon, alpha, attack_iters):
    """fast_adversarial's attack_pgd (one restart), in [0,1] pixel space."""
    delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
    delta.data = clamp(delta, -X, 1 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
        d = clamp(d, -X, 1 - X)
        delta.data = d
        delta.grad.zero_()
    return delta.detach()


def epoch_fgsm(model, data, opt, device, epsilon, alpha=None):
    alpha = alpha or epsilon
    train_loss = train_acc = n = 0
    for X, y in data:
        X, y = X.to(device), y.to(device)
        delta = torch.zeros_like(X, requires_grad=True)
        loss = F.cross_entropy(model(X + delta), y)
        loss.backward()
        delta.data = clamp(delta + alpha * torch.sign(delta.grad.detach()), -X, 1 - X)
        delta = delta.detach()
        output = model(torch.clamp(X + delta, 0, 1))
        loss = F.cross_entropy(output, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_loss += loss.item() * y.size(0)
        train_acc += (output.max(1)[1] == y).sum().item()
        n += y.size(0)
    return train_loss / n, train_acc / n


def epoch_pgd(model, data, opt, device, epsilon, alpha, steps):
    train_loss = train_acc = n = 0
    for X, y in data:
        X, y = X.to(device), y.to(device)
        delta = attack_pgd(model, X, y, epsilon, alpha, steps)
        output = model(clamp(X + delta, torch.zeros_like(X), torch.ones_like(X)))
        loss = F.cross_entropy(output, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_loss += loss.item() * y.size(0)
        train_acc += (output.max(1)[1] == y).sum().item()
        n += y.size(0)
    return train_loss / n, train_acc / n


def trades_loss(model, x_natural, y, optimizer, step_size, epsilon, perturb_steps, beta):
    """yaodongyu/TRADES trades.py, L-inf branch."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    optimizer.zero_grad()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
    return loss_natural + beta * loss_robust


def epoch_trades(model, data, opt, device, epsilon, alpha, steps, beta=6.0):
    total = n = 0
    for X, y in data:
        X, y = X.to(device), y.to(device)
        opt.zero_grad()
        loss = trades_loss(model, X, y, opt, alpha, epsilon, steps, beta)
        loss.backward()
        opt.step()
        total += loss.item() * y.size(0)
        n += y.size(0)
    return total / n


def epoch_jeat(model, data, opt, device, epsilon, buffer, sgld_steps=20, step_size=1.0, noise=0.01, reinit=0.05):
    """JEM-style loop: energy attack (JEAT eq. 18), replay-buffer SGLD, loss CE(x*) + E(x*) - E(x_sgld)."""
    total = n = 0
    for X, y in data:
        X, y = X.to(device), y.to(device)
        delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
        delta.data = clamp(delta, -X, 1 - X)
        delta.requires_grad = True
        e_joint = -model(X + delta).gather(1, y[:, None]).sum()
        e_joint.backward()
        delta.data = clamp(torch.clamp(delta + epsilon * delta.grad.sign(), -epsilon, epsilon), -X, 1 - X)
        x_adv = (X + delta).detach()
        idx = torch.randint(0, len(buffer), (len(X),))
        x_k = buffer[idx].to(device)
        fresh = (torch.rand(len(X)) < reinit).to(device)
        x_k[fresh] = torch.rand_like(x_k[fresh])
        model.eval()
        for _ in range(sgld_steps):
            x_k.requires_grad_(True)
            f_prime = torch.autograd.grad((-torch.logsumexp(model(x_k), 1)).sum(), [x_k])[0]
            x_k = (x_k.detach() - step_size * f_prime + noise * torch.randn_like(x_k)).clamp(0, 1)
        model.train()
        buffer[idx] = x_k.detach().cpu()
        logits_adv = model(x_adv)
        e_adv = -torch.logsumexp(logits_adv, 1)
        loss = F.cross_entropy(logits_adv, y) + e_adv.mean() + torch.logsumexp(model(x_k), 1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * y.size(0)
        n += y.size(0)
    return total / n
