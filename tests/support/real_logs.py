"""Detectors on real training logs: Fashion-MNIST, FGSM with catastrophic overfitting vs healthy RS-FGSM.

The logs are made once per test session by `real_runs()` (shared with tests/test_stopper.py):

1. one real `energy-at sweep` on embedded Ray with the energy stopper on: FGSM (CO) and
   RS-FGSM (healthy), one CPU each, side by side; the FGSM trial gets stopped;
2. a copy of that sweep directory in which the stopped FGSM trial is resumed in-process
   to its last epoch: its logs are then those of an uninterrupted run (a trial resumes
   exactly from its per-epoch checkpoint), so both trials have full curves, as with
   the stopper off.

Settings and the measured onsets behind them: docs/detection.md.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analysis.detectors import detect
from analysis.read import SweepLogs
from orchestrator.config import compose_trial
from workloads.config import trial_id
from workloads.trial import Trial


# the onset table's setting (docs/detection.md), cut to 5 epochs. At eps 0.3 FGSM's path is chaotic and
# moves with the CPU's float kernels: seed 2 went 0.035, 0.125, 0.004 on one machine and was never robust
# on another (0.04, 0.01, 0.09, 0.05). Seed 1 on the current CI machine: 0.16, 0.09, 0.20, 0.07 (collapse
# at epoch 3, co_energy and co_pgd_probe fire there); seeds 0, 3, 4 collapse too but co_energy finds
# them later or not at all. If these tests fail on a new machine, look at the FGSM curve first.
EPOCHS = 5
SETTINGS = ["attack.eps=0.3", f"epochs={EPOCHS}", "batch_size=128", "data.subset=10000", "data.val_size=256",
            "data.probe_size=256", "data.test_size=256", "eval.pgd_steps=5"]
SEED = 1
METHODS = ("fgsm", "rs_fgsm")  # CO, healthy
COLLAPSE_RATIO = 0.5  # the collapse definition of docs/detection.md


@dataclass(frozen=True)
class Runs:
    sweep: Path  # the sweep, stopper on: FGSM stopped
    full: Path  # the same trials, FGSM resumed to its last epoch (full curves)
    co: str  # FGSM trial id
    healthy: str  # RS-FGSM trial id
    seconds: dict


_RUNS: list[Runs] = []


def energy_at(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def trial_overrides(method: str) -> list[str]:
    return [f"method={method}", f"seed={SEED}", *SETTINGS]


def real_runs(root: Path) -> Runs:
    """Make the logs once per session (the first caller's `root` holds them)."""
    if _RUNS:
        return _RUNS[0]
    sweep, full = root / "sweep", root / "full"
    t0 = time.time()
    r = energy_at("sweep", "sweep=smoke", f"method={','.join(METHODS)}", f"seed={SEED}", *SETTINGS,
                  f"sweep.out={sweep}", "sweep.report=false")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    t1 = time.time()
    ids = {m: trial_id(compose_trial([*trial_overrides(m), f"out={sweep}"])) for m in METHODS}
    assert {p.name.removeprefix("trial=") for p in (sweep / "trials").iterdir()} == set(ids.values())
    shutil.copytree(sweep, full, ignore=shutil.ignore_patterns("tune", "events"))
    cfg = compose_trial([*trial_overrides("fgsm"), f"out={full}", "threads=1", "device=cpu"])
    assert trial_id(cfg) == ids["fgsm"]
    summary = Trial(cfg).run()  # resumes after the stop epoch
    assert summary["status"] == "finished", summary
    runs = Runs(sweep, full, ids["fgsm"], ids["rs_fgsm"],
                {"sweep": t1 - t0, "resume": time.time() - t1})
    print(f"real logs: sweep {runs.seconds['sweep']:.0f} s, resume {runs.seconds['resume']:.0f} s")
    _RUNS.append(runs)
    return runs


def collapse_epoch(acc: list[float]) -> int | None:
    """First epoch e >= 1 with val PGD accuracy <= 0.5 x the best of epochs < e."""
    for e in range(1, len(acc)):
        if acc[e] <= COLLAPSE_RATIO * max(acc[:e]):
            return e
    return None


def all_events(directory: Path) -> pl.DataFrame:
    s = SweepLogs(directory)
    return detect(s.scan("batches"), s.scan("epochs"), s.scan("probes"))


def val_pgd(directory: Path, trial: str) -> list[float]:
    epochs = SweepLogs(directory).scan("epochs").filter((pl.col("trial") == trial) & (pl.col("split") == "val"))
    return epochs.sort("epoch").collect()["acc_pgd"].to_list()
