"""How much the PGD probe's reading moves between runs of its random starts, against the noise `co_pgd_probe` assumes.

    python benchmarks/probe_spread.py SWEEP_DIR [--seeds 10] [--which last] [--threads 2] [--format md|json]

`co_pgd_probe` tests a fall of the probe's PGD accuracy with a two-proportion z-test, as if two readings
were two samples of images: noise sqrt(2 p (1 - p) / n). A trial re-reads the same probe images every epoch
with the same random starts (drawn per sample from the trial's seed), so within a trial the only other
source of run-to-run noise is the attack's random start. This measures it: each checkpoint of SWEEP_DIR
(every trial's best.pt or last.pt) is read by the trial's own probe evaluation (its probe split, eps, PGD
steps, step size and restarts) under `--seeds` different seeds of the random starts, and the table gives
per trial the mean and sd of the readings, the z-test's noise at that accuracy, their ratio, and the
largest difference of two readings in the z-test's units (a `co_pgd_probe` fire needs z >= 3 there, and a
fall to 0.6x the best). A ratio well below 1: the start adds little, and the z-test over-states the noise
of the same model read twice. Its reading of a changed model is what the test is for.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workloads.config import OneLineParser, eval_alpha  # noqa: E402
from workloads.run_dir import CheckpointError  # noqa: E402
from workloads.evaluation.checkpoint import load_trial, resolve, trial_data  # noqa: E402
from workloads.evaluation.per_epoch import evaluate_pgd  # noqa: E402


def readings(sweep: Path, seeds: int, which: str) -> list[dict]:
    """Per checkpoint: the probe's PGD accuracy under each seed of the random starts."""
    out = []
    for ref in resolve(sweep, which):
        model, cfg, meta = load_trial(ref)
        probe = trial_data(cfg).probe
        acc = [evaluate_pgd(model, probe, cfg.attack.eps, eval_alpha(cfg), cfg.eval.pgd_steps, cfg.eval.restarts,
                            cfg.eval.batch_size, seed=s).correct_adv.float().mean().item() for s in range(seeds)]
        out.append({"trial": ref.trial, "epoch": meta.get("epoch"), "n": len(probe), "steps": cfg.eval.pgd_steps,
                    "restarts": cfg.eval.restarts, "acc": acc})
    return out


def spread(r: dict) -> dict:
    """One row: the readings' mean and sd, the z-test's noise of one reading's difference, and their ratio."""
    mean, sd = statistics.fmean(r["acc"]), statistics.stdev(r["acc"])
    z_noise = math.sqrt(2 * mean * (1 - mean) / r["n"])  # sd of a difference of two readings, as the z-test has it
    z_max = (max(r["acc"]) - min(r["acc"])) / z_noise if z_noise else float("nan")
    return {"trial": r["trial"], "epoch": r["epoch"], "n": r["n"], "mean": mean, "sd": sd,
            "sd_of_difference": math.sqrt(2) * sd, "z_test_noise": z_noise,
            "ratio": math.sqrt(2) * sd / z_noise if z_noise else float("nan"), "largest_difference_z": z_max}


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a sweep (train out=) directory with checkpoints/")
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the random starts per checkpoint (>= 2)")
    ap.add_argument("--which", default="last", choices=["best", "last"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--format", default="md", choices=["md", "json"])
    a = ap.parse_args(argv)
    if a.seeds < 2:
        ap.error("--seeds: needs at least 2 readings for a spread; use e.g. --seeds 10")
    torch.set_num_threads(a.threads)
    try:
        rows = [spread(r) for r in readings(a.sweep, a.seeds, a.which)]
    except CheckpointError as e:
        ap.error(str(e))
    if a.format == "json":
        print(json.dumps(rows))
        return 0
    print(f"{a.sweep}: {len(rows)} checkpoints ({a.which}.pt), {a.seeds} seeds of the probe's random starts each")
    print(markdown(rows))
    ratios = sorted(r["ratio"] for r in rows if not math.isnan(r["ratio"]))
    if ratios:
        print(f"\nratio of the readings' sd of a difference to the z-test's noise: median {statistics.median(ratios):.2f}, "
              f"largest {ratios[-1]:.2f}; largest difference of two readings: "
              f"{max(r['largest_difference_z'] for r in rows):.2f} z-test units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
