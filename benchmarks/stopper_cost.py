"""The stop rule's time per epoch report, early and late in a long trial: incremental vs a fresh read.

    python benchmarks/stopper_cost.py [--epochs 200] [--steps 400] [--stop-on co_pgd_probe,ro,nan]

Writes one trial's `batches` (a part every `telemetry.flush_every`=100 steps, through the
project's PartWriter) and `epochs` tables epoch by epoch into a temp folder, and after each
epoch asks the trial's stop rule (`EnergyStop`, which reads only the parts written since its
last call) for a decision, as a running trial does. At epoch 5 and at the last epoch it also
times `first_event` (a fresh read of every file, the baseline) on the same prefix, side by
side, and checks both decide the same. Prints seconds per report and the ratio.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.stopper import EnergyStop, first_event  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.telemetry.writer import PartWriter  # noqa: E402

FLUSH = 100  # telemetry.flush_every's default


def write_epoch(out: Path, writers: dict, epoch: int, steps: int, rng: np.random.Generator) -> None:
    first = epoch * steps
    for a in range(0, steps, FLUSH):
        n = min(FLUSH, steps - a)
        step = np.arange(first + a, first + a + n)
        writers["batches"].write({
            "schema_version": np.ones(n, np.int16), "trial": ["t"] * n, "method": ["fgsm"] * n,
            "epoch": np.full(n, epoch, np.int32), "step": step, "lr": np.full(n, 0.05, np.float32),
            "loss": (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32),
            **{c: (-1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32) for c in ("de", "de_y")},
            "de_std": (0.5 + 0.05 * rng.standard_normal(n)).astype(np.float32),
        })
    acc = 0.4 + 0.01 * rng.standard_normal(2)
    writers["epochs"].write({
        "schema_version": np.ones(2, np.int16), "trial": ["t", "t"], "method": ["fgsm", "fgsm"],
        "epoch": np.full(2, epoch, np.int32), "step": np.full(2, first + steps - 1), "split": ["val", "probe"],
        "n": np.array([1000, 512], np.int32), "acc_pgd": acc.astype(np.float32),
    })


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--stop-on", default="co_pgd_probe,ro,nan")
    a = ap.parse_args(argv)
    stop_on = tuple(a.stop_on.split(","))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        writers = {t: PartWriter(out, t, "t") for t in ("batches", "epochs")}
        rule, rows = EnergyStop(out, "t", stop_on), []
        for epoch in range(a.epochs):
            write_epoch(out, writers, epoch, a.steps, rng)
            t0 = time.perf_counter()
            mine = rule({"epoch": epoch})
            t_inc = time.perf_counter() - t0
            if epoch in (5, a.epochs - 1):
                t0 = time.perf_counter()
                fresh = first_event(out, "t", epoch, stop_on)
                t_fresh = time.perf_counter() - t0
                assert mine == fresh, (epoch, mine, fresh)
                files = len(list((out / "batches" / "t").glob("part-*.parquet")))
                rows.append((epoch + 1, files, t_inc, t_fresh))
    print(f"stop rule {','.join(stop_on)}; {a.steps} steps an epoch, a batches part every {FLUSH} steps")
    print("| after epoch | batches files | incremental s/report | fresh read s/report | fresh / incremental |")
    print("|---|---|---|---|---|")
    for epoch, files, t_inc, t_fresh in rows:
        print(f"| {epoch} | {files} | {t_inc:.3f} | {t_fresh:.3f} | {t_fresh / t_inc:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
