"""Learning-rate schedules as pure functions of the global step (nothing to checkpoint but the step)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | piecewise | cyclic | onecycle
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # piecewise: fractions of training
    factor: float = 0.1  # piecewise: lr multiplier at each milestone
    peak: float = 0.4  # cyclic: fraction of training at the peak
    pct_start: float = 0.25  # onecycle: warm-up fraction


Schedule = Callable[[float, ScheduleConfig, float], float]  # (base lr, cfg, progress in [0,1]) -> lr


def constant(lr: float, cfg: ScheduleConfig, t: float) -> float:
    return lr


def piecewise(lr: float, cfg: ScheduleConfig, t: float) -> float:
    """Rice et al.: lr times `factor` at each milestone (fractions of training, default 50% and 75%)."""
    return lr * cfg.factor ** sum(t >= m for m in cfg.milestones)


def cyclic(lr: float, cfg: ScheduleConfig, t: float) -> float:
    """Wong et al.: linear 0 -> lr at `peak` -> 0."""
    return lr * (t / cfg.peak if t < cfg.peak else max(0.0, (1 - t) / (1 - cfg.peak)))


def onecycle(lr: float, cfg: ScheduleConfig, t: float) -> float:
    """torch's OneCycleLR (cosine; initial lr/25, final lr/25e4), as the WEAT recipe steps it per batch."""
    start, end = lr / 25, lr / 25 / 1e4
    if t < cfg.pct_start:
        a, b, u = start, lr, t / cfg.pct_start
    else:
        a, b, u = lr, end, (t - cfg.pct_start) / (1 - cfg.pct_start)
    return b + (a - b) * (1 + math.cos(math.pi * u)) / 2


SCHEDULES: dict[str, Schedule] = {"constant": constant, "piecewise": piecewise, "cyclic": cyclic,
                                   "onecycle": onecycle}


def lr_at(step: int, total_steps: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate of optimiser step `step` (0-based) out of `total_steps`."""
    return SCHEDULES[cfg.name](base_lr, cfg, step / max(total_steps, 1))
