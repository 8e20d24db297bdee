"""The energy trigger: when the free training stream says "look now", the trial runs its PGD probe at once.

Per signal s of the `batches` stream (TRIGGER_SIGNALS) and per logged step t, in the trial's own units:

    z_t = (s_t - median) / (1.4826 MAD)      median, MAD: the second half of the previous epoch's values
    S_t = max(0, S_{t-1} + side * z_t - k)    a one-sided CUSUM (Page 1954) per signal and side

The trigger fires at the first step where some S_t >= h, once `warmup` epochs have been seen; then every
S restarts at 0. A step without a value (dE on steps that did not measure f(x)) leaves S unchanged. k
absorbs the drift of healthy training (z moves by well under k a step), h how much evidence a fire
needs; both are in units of the trial's own step-to-step spread, so they carry across models,
datasets and eps. k, h and the signals were chosen on the dev split of the detection corpus
(benchmarks/detection/trigger.py, docs/detection.md).

The trial feeds each flushed block of rows (`update`), so a fire is acted on at the flush after its
step (every `telemetry.flush_every` steps, and at least LOOKS_PER_EPOCH times an epoch); `analysis.detectors.trigger` replays the same class over the `batches` table, so the offline
events are the online ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAD_TO_SD = 1.4826
# signal -> side: +1 a rise counts, -1 a fall, 0 either (two CUSUMs)
TRIGGER_SIGNALS: dict[str, int] = {"de_y": 0, "acc_adv": 1}
K = 0.5  # drift allowance, in robust sd a step
H = 40.0  # evidence to fire, in robust sd
WARMUP = 1  # epochs seen before the trigger is armed (its first reference)
LOOKS_PER_EPOCH = 4  # the trial flushes (and the trigger reads) at least this often an epoch, so that a fire can
# be acted on within the epoch even when an epoch is shorter than `telemetry.flush_every` steps
MIN_VALUES = 5  # an epoch with fewer values of a signal keeps the older reference


@dataclass
class Fire:
    """One firing: the step, the signal and side whose CUSUM crossed h, the step's z and the CUSUM."""

    epoch: int
    step: int
    signal: str
    side: int
    z: float
    cusum: float

    def evidence(self) -> str:
        way = "up" if self.side > 0 else "down"
        return f"trigger: {self.signal} CUSUM {way} {self.cusum:.1f} >= h (step z={self.z:.1f})"


@dataclass
class Trigger:
    """The CUSUM state of one trial; `update(rows)` -> the fires among them. `state_dict()` goes in the
    checkpoint (taken at an epoch end), so a resumed trial fires where an uninterrupted one would."""

    signals: dict[str, int] = field(default_factory=lambda: dict(TRIGGER_SIGNALS))
    k: float = K
    h: float = H
    warmup: int = WARMUP
    epoch: int | None = None  # epoch of the rows in `current`
    seen: int = 0  # epochs finished so far
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)  # signal -> (median, robust sd)
    current: dict[str, list[float]] = field(default_factory=dict)  # this epoch's values
    cusum: dict[str, float] = field(default_factory=dict)  # "signal:side" -> S

    def _roll(self) -> None:
        """The epoch in `current` is over: its second half becomes the reference."""
        for s, values in self.current.items():
            v = np.asarray(values[len(values) // 2:], dtype=np.float64)
            if len(v) >= MIN_VALUES:
                m = float(np.median(v))
                self.reference[s] = (m, MAD_TO_SD * float(np.median(np.abs(v - m))))
        self.current = {}
        self.seen += 1

    def update(self, epochs, steps, columns: dict) -> list[Fire]:
        """Feed rows (epoch, step and each signal's values; NaN or masked = not measured) in step order."""
        fires = []
        values = {s: np.ma.filled(np.ma.asarray(columns[s], dtype=np.float64), np.nan)
                  for s in self.signals if s in columns}
        for i, (epoch, step) in enumerate(zip(epochs, steps)):
            epoch = int(epoch)
            if epoch != self.epoch:
                if self.epoch is not None:
                    self._roll()
                self.epoch = epoch
            top = None
            for s, side in self.signals.items():
                x = float(values[s][i]) if s in values else math.nan  # Python floats: the checkpoint loads them
                if not math.isfinite(x):
                    continue
                self.current.setdefault(s, []).append(x)
                if self.seen < self.warmup or s not in self.reference:
                    continue
                m, sd = self.reference[s]
                z = (x - m) / max(sd, 1e-12)
                for d in ((1, -1) if side == 0 else (side,)):
                    key = f"{s}:{d}"
                    c = self.cusum[key] = max(0.0, self.cusum.get(key, 0.0) + d * z - self.k)
                    if c >= self.h and (top is None or c > top.cusum):
                        top = Fire(epoch, int(step), s, d, float(z), float(c))
            if top is not None:
                fires.append(top)
                self.cusum = {}
        return fires

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seen": self.seen, "reference": dict(self.reference),
                "current": {s: list(v) for s, v in self.current.items()}, "cusum": dict(self.cusum)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.seen = state["epoch"], state["seen"]
        self.reference = {s: tuple(v) for s, v in state["reference"].items()}
        self.current = {s: list(v) for s, v in state["current"].items()}
        self.cusum = dict(state["cusum"])
