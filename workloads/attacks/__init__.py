"""Inner attacks (docs/methods.md#attacks), all L-inf, all in [0,1] pixel space.

Every attack takes `(model, x, y, eps, alpha, ...)` and returns an `AttackResult`.
Results stay in the eps-ball around x (except N-FGSM, by design, and FGSM with alpha > eps) and in [0,1].
"""
from workloads.attacks.gradient import (
    AttackResult,
    Noise,
    energy_attack,
    fgsm,
    n_fgsm,
    pgd,
    rs_fgsm,
    trades_kl,
    uniform,
)
from workloads.attacks.starts import SampleNoise

ATTACKS = {
    "fgsm": fgsm,
    "rs_fgsm": rs_fgsm,
    "n_fgsm": n_fgsm,
    "pgd": pgd,
    "trades_kl": trades_kl,
    "energy": energy_attack,
}
SINGLE_STEP = ("fgsm", "rs_fgsm", "n_fgsm", "energy")
MULTI_STEP = ("pgd", "trades_kl")  # `attack.steps` steps
# the `attack.*` fields besides eps that the training loop hands each attack (workloads/trial.py `_attack`)
ATTACK_KNOBS = {
    "fgsm": ("alpha",),
    "rs_fgsm": ("alpha",),
    "n_fgsm": ("alpha", "noise"),
    "pgd": ("alpha", "steps"),
    "trades_kl": ("alpha", "steps"),
    "energy": ("alpha",),
}


def multi_step_alpha(eps: float, steps: int) -> float:
    """max(eps/4, 2.5 eps / steps): k steps reach the ball's surface (Madry et al.'s 2.5 eps / k).

    eps/4 itself from 10 steps on, bit for bit (2.5 * eps / 10 may round an ulp above it), so that trials
    of 10 or more steps keep the step size, and the id, the old default eps/4 gave them.
    """
    return eps / 4 if steps >= 10 else 2.5 * eps / steps


def default_alpha(attack: str, eps: float, steps: int = 10) -> float:
    """Step size when the config leaves `attack.alpha` empty, relative to eps as in the papers;
    `steps` is read by the multi-step attacks only."""
    if attack in MULTI_STEP:
        return multi_step_alpha(eps, steps)  # 2/255 at 8/255 for 10 steps or more
    return {
        "fgsm": eps,
        "rs_fgsm": 1.25 * eps,  # Wong et al.: 10/255 at 8/255
        "n_fgsm": eps,  # de Jorge et al.
        "energy": eps,  # JEAT eq. 18
    }[attack]


__all__ = ["ATTACKS", "ATTACK_KNOBS", "SINGLE_STEP", "MULTI_STEP", "AttackResult", "Noise", "SampleNoise",
           "default_alpha", "multi_step_alpha", "uniform", *ATTACKS]
