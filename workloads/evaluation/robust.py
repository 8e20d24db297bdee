"""Final robustness evaluation: clean, PGD-k with restarts, targeted PGD, APGD-CE and AutoAttack.

The random starts of PGD and the targets of targeted PGD are drawn per sample from (seed, sample id)
(`workloads.attacks.SampleNoise`), as in the per-epoch evaluation: `pgd-trial`, the PGD of the trial's
own evaluation, reproduces its result.json. pyautoattack's attacks seed themselves per batch.

PGD is the project's own (`workloads.attacks.pgd`, the same code the training loop
evaluates with); APGD-CE and AutoAttack come from pyautoattack, the AutoAttack
authors' own code (fra31/auto-attack) as published on PyPI (RobustBench installs
the same package). `autoattack` is its standard L-inf version with the paper's
budgets (Croce & Hein 2020: APGD-CE 100 iterations, APGD-T 9 target classes x 100,
FAB-T 9 x 100, Square 5,000 queries; each attack only on the points the previous
ones did not break); `autoattack-fast` is the same with 10 iterations for the three
white-box attacks (the budget of torchattacks' `AutoAttack`, which energy-at used
before: Harry24k/adversarial-attacks-pytorch#196).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.attacks import Noise, SampleNoise, multi_step_alpha, pgd, uniform
from workloads.attacks.starts import TARGETS
from workloads.config import TrialConfig
from workloads.data import Split, batches
from workloads.energy import joint_energy, marginal_energy

TRIAL_PGD = "pgd-trial"
ATTACK_HELP = ("clean, pgd<k> (e.g. pgd20, pgd50), pgd<k>-targeted, pgd-trial (the trial's own evaluation PGD), "
               "apgd-ce, autoattack, autoattack-fast")
_ATTACK = re.compile(r"^(clean|pgd([1-9][0-9]*)(-targeted)?|pgd-trial|apgd-ce|autoattack|autoattack-fast)$")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: str  # clean | pgd | pgd_targeted | apgd | autoattack | autoattack-fast | trial (pgd-trial, see for_trial)
    steps: int | None = None
    restarts: int | None = None  # None: the evaluation's restarts
    alpha: float | None = None  # None: the evaluation's alpha, or the multi-step default for `steps`

    @property
    def targeted(self) -> bool:
        return self.kind == "pgd_targeted"


def parse_attack(name: str) -> AttackSpec:
    m = _ATTACK.match(name.strip().lower())
    if not m:
        raise ValueError(f"unknown attack {name!r}; allowed: {ATTACK_HELP}")
    text = m.group(1)
    if text in ("clean", "autoattack", "autoattack-fast"):
        return AttackSpec(text, text)
    if text == TRIAL_PGD:
        return AttackSpec(text, "trial")
    if text == "apgd-ce":
        return AttackSpec(text, "apgd", 100)
    return AttackSpec(text, "pgd_targeted" if m.group(3) else "pgd", int(m.group(2)))


def parse_attacks(text: str) -> list[AttackSpec]:
    """'clean,pgd20,autoattack' -> specs (order kept, duplicates dropped)."""
    names = [t for t in (s.strip() for s in text.split(",")) if t]
    if not names:
        raise ValueError(f"no attack given; allowed: {ATTACK_HELP}")
    specs: list[AttackSpec] = []
    for n in names:
        spec = parse_attack(n)
        if spec not in specs:
            specs.append(spec)
    return specs


def for_trial(specs: list[AttackSpec], cfg: TrialConfig, eps: float) -> list[AttackSpec]:
    """`pgd-trial` made the PGD of the trial's evaluation (per epoch and in result.json): `eval.pgd_steps`
    steps, `eval.restarts` restarts, `eval.pgd_alpha` or its default (`workloads.config.eval_alpha`) at `eps`."""
    ev = cfg.eval
    own = AttackSpec(TRIAL_PGD, "pgd", ev.pgd_steps, ev.restarts, ev.pgd_alpha or multi_step_alpha(eps, ev.pgd_steps))
    return [own if s.kind == "trial" else s for s in specs]


def with_energy_attacks(specs: list[AttackSpec]) -> list[AttackSpec]:
    """Add what the energy figure needs: an untargeted PGD, APGD-CE and a targeted PGD (random wrong class)."""
    steps = next((s.steps for s in specs if s.kind == "pgd"), 20)
    out = list(specs)
    for extra in (f"pgd{steps}", "apgd-ce", f"pgd{steps}-targeted"):
        spec = parse_attack(extra)
        if spec not in out:
            out.append(spec)
    return out


def random_wrong_class(y: Tensor, num_classes: int, draws: SampleNoise) -> Tensor:
    """A uniformly drawn class != y for every sample."""
    return (y + draws.integers(1, num_classes).to(y.device)) % num_classes


def targeted_pgd(model: nn.Module, x: Tensor, target: Tensor, eps: float, alpha: float, steps: int,
                 restarts: int = 1, start: Noise = uniform) -> Tensor:
    """L-inf PGD that *descends* CE(f(x'), target): random start, sign steps, project, clip01.

    With several restarts each sample keeps the restart with the lowest loss towards its target.
    """
    best, best_loss = x.clone(), torch.full(target.shape, torch.inf, device=x.device)
    for _ in range(restarts):
        delta = start(x, eps)
        delta = (x + delta).clamp_(0, 1) - x
        for _ in range(steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                loss = F.cross_entropy(model(x + delta).float(), target, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() - alpha * grad.sign()).clamp_(-eps, eps)
            delta = (x + delta).clamp_(0, 1) - x
        with torch.no_grad():
            loss = F.cross_entropy(model(x + delta).float(), target, reduction="none")
        better = loss < best_loss
        best[better], best_loss[better] = (x + delta)[better], loss[better]
    return best.detach()


def run_attack(spec: AttackSpec, model: nn.Module, x: Tensor, y: Tensor, ids: Tensor, eps: float, alpha: float,
               restarts: int, num_classes: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """(x_adv, target or None) for one batch of samples `ids`; model in eval mode. The global RNG is left alone."""
    if spec.kind == "trial":
        raise ValueError(f"{TRIAL_PGD} is the PGD of a trial: resolve it with for_trial(specs, cfg, eps)")
    if spec.kind == "clean" or eps == 0:
        return x, None
    if spec.kind == "pgd":
        return pgd(model, x, y, eps, alpha, spec.steps, restarts, start=SampleNoise(seed, ids)).x_adv, None
    if spec.kind == "pgd_targeted":
        target = random_wrong_class(y, num_classes, SampleNoise(seed, ids, TARGETS))
        return targeted_pgd(model, x, target, eps, alpha, spec.steps, restarts, start=SampleNoise(seed, ids)), target
    cuda = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # pyautoattack's attacks call torch.manual_seed(seed)
        if spec.kind == "apgd":
            from pyautoattack.autopgd_base import APGDAttack

            attack = APGDAttack(model, n_iter=spec.steps, norm="Linf", n_restarts=1, eps=eps, seed=seed, loss="ce",
                                device=x.device)
            return attack.perturb(x, y).detach(), None
        iterations = 10 if spec.kind == "autoattack-fast" else 100
        aa = autoattack(model, eps, num_classes, seed, device=x.device, iterations=iterations)
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv.detach(), None


def autoattack(model: nn.Module, eps: float, num_classes: int, seed: int = 0, device: torch.device | str = "cpu",
               iterations: int = 100, queries: int = 5000):
    """pyautoattack's AutoAttack, version 'standard' (L-inf), with `iterations` for APGD-CE, APGD-T and
    FAB-T (100 is the paper's) and num_classes - 1 target classes (the paper's 9 for 10 classes)."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT

    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=device)
    targets = min(9, num_classes - 1)
    if iterations != 100:  # the attacks derive their step schedules from n_iter when built
        aa.apgd = APGDAttack(model, n_iter=iterations, norm="Linf", n_restarts=1, eps=eps, seed=seed, loss="ce",
                             device=device, logger=aa.logger)
        aa.apgd_targeted = APGDAttack_targeted(model, n_iter=iterations, norm="Linf", n_restarts=1, eps=eps,
                                               seed=seed, device=device, logger=aa.logger)
        aa.fab = FABAttack_PT(model, norm="Linf", n_restarts=1, n_iter=iterations, eps=eps, seed=seed,
                              device=device)
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = targets
    aa.square.n_queries = queries
    return aa


def head(split: Split, n: int | None) -> Split:
    """The first n samples of a split (all if n is None or larger)."""
    if n is None or n >= len(split):
        return split
    return Split(split.images[:n], split.labels[:n], split.ids[:n])


@dataclass
class EvalResult:
    rows: list[dict]  # one per attack: attack, eps, n, accuracy, steps, restarts, alpha, seconds
    energies: dict[str, list] | None  # attack_energies columns (None unless asked for)


def evaluate(model: nn.Module, split: Split, specs: list[AttackSpec], eps: float, alpha: float | None = None,
             restarts: int = 2, num_classes: int = 10, batch_size: int = 500, energies: bool = False,
             seed: int = 0) -> EvalResult:
    """Accuracy of `model` on `split` under every attack in `specs` (and per-sample energies if asked).

    alpha: PGD step size, default max(eps/4, 2.5 eps/k) for k steps (as the trial's attacks); a spec's own
    alpha and restarts (`pgd-trial`) win. Every attack sees the same samples; random starts and targets are
    drawn per sample from (seed, sample id).
    """
    def step(spec: AttackSpec) -> float | None:
        return spec.alpha or alpha or (multi_step_alpha(eps, spec.steps) if spec.steps else None)

    was_training = model.training
    model.eval()
    correct = {s.name: 0 for s in specs}
    seconds = {s.name: 0.0 for s in specs}
    cols: dict[str, list] = {}
    n = 0
    for x, y, ids in batches(split, batch_size, shuffle=False):
        with torch.no_grad():
            nat = model(x)
        e_nat, e_nat_y = marginal_energy(nat), joint_energy(nat, y)
        n += len(y)
        for spec in specs:
            started = time.perf_counter()
            x_adv, target = run_attack(spec, model, x, y, ids, eps, step(spec), spec.restarts or restarts,
                                       num_classes, seed)
            with torch.no_grad():
                adv = model(x_adv) if x_adv is not x else nat
            seconds[spec.name] += time.perf_counter() - started
            pred = adv.argmax(1)
            correct[spec.name] += int((pred == y).sum())
            if energies and spec.kind != "clean":
                k = len(y)
                values = {
                    "attack": [spec.name] * k, "targeted": [spec.targeted] * k, "eps": [eps] * k,
                    "sample_id": ids, "label": y, "target": target,
                    "e_nat": e_nat, "e_adv": marginal_energy(adv), "e_nat_y": e_nat_y,
                    "e_adv_y": joint_energy(adv, y),
                    "e_adv_t": joint_energy(adv, target) if target is not None else None,
                    "correct_nat": nat.argmax(1) == y, "correct_adv": pred == y, "pred_adv": pred,
                }
                for key, v in values.items():
                    if isinstance(v, Tensor):
                        v = v.detach().cpu().tolist()
                    elif v is None:
                        v = [None] * k
                    cols.setdefault(key, []).extend(v)
    model.train(was_training)
    rows = []
    for spec in specs:
        is_pgd = spec.kind in ("pgd", "pgd_targeted")
        rows.append({"attack": spec.name, "eps": 0.0 if spec.kind == "clean" else eps, "n": n,
                     "accuracy": correct[spec.name] / max(n, 1),
                     "steps": spec.steps if spec.kind in ("pgd", "pgd_targeted", "apgd") else None,
                     "restarts": (spec.restarts or restarts) if is_pgd else None,
                     "alpha": step(spec) if is_pgd else None,
                     "seconds": seconds[spec.name]})
    return EvalResult(rows, cols if energies else None)
