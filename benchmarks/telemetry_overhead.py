"""Step time with per-batch energy telemetry on vs off, side by side in one process.

    python benchmarks/telemetry_overhead.py [--methods fgsm pgd trades] [--steps 30] [--rounds 5]

"off" runs `Trial.optimise` only; "on" runs `optimise` + `telemetry` + `EnergyLog.log_step`
(device buffering, a Parquet part every `flush_every` steps). Blocks of steps alternate
on/off so drift of the machine hits both; the ratio is median(on) / median(off) per step.
Methods that do not compute f(x) themselves (e.g. rs_fgsm, pgd) pay one extra forward for
the natural energies: that is part of what telemetry costs and is included.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.config import compose_trial  # noqa: E402
from workloads.data import batches  # noqa: E402
from workloads.trial import Trial  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, steps: int, rounds: int, overrides: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        trial = Trial(compose_trial([f"method={method}", f"out={out}", "data.subset=4096", "telemetry.flush_every=100",
                                     *overrides]))
        data = list(batches(trial.data.train, trial.cfg.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(0)))
        times: dict[bool, list[float]] = {True: [], False: []}
        step = 0
        for r in range(rounds * 2 + 1):
            on = r % 2 == 1  # round 0 (off) is a warm-up and is dropped
            sync(trial.device)
            start = time.perf_counter()
            for i in range(steps):
                x, y, _ = data[(step + i) % len(data)]
                s = trial.optimise(x, y, 0.01)
                if on:
                    trial.log.log_step(0, step + i, 0.01, trial.telemetry(s))
            if on:
                trial.log.flush()
            sync(trial.device)
            if r > 0:
                times[on].append((time.perf_counter() - start) / steps)
            step += steps
        return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["fgsm", "rs_fgsm", "pgd", "trades"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=preact_resnet18 device=cuda")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, overrides {args.overrides or '-'}")
    print(f"{'method':<10} {'off ms/step':>12} {'on ms/step':>12} {'ratio on/off':>13}")
    for method in args.methods:
        on, off = measure(method, args.steps, args.rounds, args.overrides)
        print(f"{method:<10} {off * 1e3:>12.2f} {on * 1e3:>12.2f} {on / off:>13.3f}")


if __name__ == "__main__":
    main()
