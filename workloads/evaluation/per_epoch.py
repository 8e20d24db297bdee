"""Robustness and energies of a model on a data split under PGD: the per-epoch evaluation of a trial (and its final test)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workloads.attacks import SampleNoise, pgd
from workloads.data import Split, batches
from workloads.energy import delta_energy, joint_energy, marginal_energy


@dataclass
class PerSample:
    """Per-sample results of one split; tensors on the host."""

    ids: Tensor
    labels: Tensor
    e_nat: Tensor
    e_adv: Tensor
    e_nat_y: Tensor
    e_adv_y: Tensor
    correct_nat: Tensor
    correct_adv: Tensor

    def summary(self) -> dict[str, float]:
        """Accuracies and energy means/deltas, named as in the `epochs` table."""
        de = delta_energy(self.e_nat, self.e_adv)
        return {
            "n": len(self.ids),
            "acc_nat": self.correct_nat.float().mean().item(),
            "acc_pgd": self.correct_adv.float().mean().item(),
            "e_nat": self.e_nat.mean().item(), "e_adv": self.e_adv.mean().item(),
            "e_nat_y": self.e_nat_y.mean().item(), "e_adv_y": self.e_adv_y.mean().item(),
            "de": de.mean().item(), "de_y": delta_energy(self.e_nat_y, self.e_adv_y).mean().item(),
            "de_std": de.std(correction=0).item(),
        }


def evaluate_pgd(model: nn.Module, split: Split, eps: float, alpha: float, steps: int, restarts: int = 1,
                 batch_size: int = 512, seed: int = 0) -> PerSample:
    """Clean and PGD-`steps` predictions and energies of every sample of `split`, model in eval mode.

    The random starts are drawn per sample from (seed, sample id): equal weights give equal results,
    whatever the batch size, and the global RNG is left alone.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {k: [] for k in PerSample.__dataclass_fields__}
    for x, y, ids in batches(split, batch_size, shuffle=False):
        x_adv = pgd(model, x, y, eps, alpha, steps, restarts, start=SampleNoise(seed, ids)).x_adv if eps > 0 else x
        with torch.no_grad():
            nat, adv = model(x), model(x_adv)
        values = {"ids": ids, "labels": y, "e_nat": marginal_energy(nat), "e_adv": marginal_energy(adv),
                  "e_nat_y": joint_energy(nat, y), "e_adv_y": joint_energy(adv, y),
                  "correct_nat": nat.argmax(1) == y, "correct_adv": adv.argmax(1) == y}
        for k, v in values.items():
            parts[k].append(v.detach().cpu())
    model.train(was_training)
    return PerSample(**{k: torch.cat(v) for k, v in parts.items()})
