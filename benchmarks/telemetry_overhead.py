"""Per-batch energy telemetry's cost relative to the training step it observes, in one process.

    python benchmarks/telemetry_overhead.py [--methods fgsm pgd trades] [--steps 200] [--json F] [OVERRIDES]

Every step is timed in two parts on the same batch: `Trial.optimise` (the step) and
`Trial.telemetry` (handing the step's logits to the log, the batched energies of
every block of steps, and a Parquet part every `flush_every` steps). The overhead is
sum(telemetry) / sum(step); timing the two parts of each step, instead of the
difference of two separately timed runs, keeps the machine's drift out of the ratio
(on 2 shared cores that drift is a few percent, larger than the effect measured).
Methods that do not compute f(x) themselves (rs_fgsm, n_fgsm, pgd, prejeat, jeat) pay
an extra no-grad forward for the natural energies every `telemetry.natural_every`
steps: that is part of what telemetry costs and is included. The trial is built on
the full training set, so that default cadence is the one of a real run.

On CUDA every timed step also runs under CUDA's sync debug mode ("warn", counted: "error" would
abort the step at the first sync); a training step should make none. The steps that write a
Parquet part (every `flush_every`) copy their block to the host by design and are counted apart.

The energy trigger (workloads/telemetry/trigger.py) reads each flushed block on the host; its time is
measured the same way, armed (a previous epoch's reference in place), and reported apart: `trigger`
= its seconds / the steps' seconds (the issue's bound: 0.5% of a step).
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.config import compose_trial  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.data import batches  # noqa: E402
from workloads.host import frozen_heap  # noqa: E402
from workloads.telemetry.trigger import Trigger  # noqa: E402
from workloads.trial import Trial  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def counting_syncs(device: torch.device, counts: list[int]) -> Iterator[None]:
    """Append to `counts` the host syncs CUDA's sync debug mode reports inside the block (CPU: nothing to count)."""
    if device.type != "cuda":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counts.append(sum("synchroniz" in str(w.message) for w in caught))


def measure(method: str, steps: int, overrides: list[str]) -> dict:
    """Seconds of the step and of its telemetry, per step, over `steps` steps after 5 warm-up steps (and a
    first Parquet write); the trial's natural_every; host syncs in the timed steps, flushes apart (CUDA)."""
    with tempfile.TemporaryDirectory() as out:
        trial = Trial(compose_trial([f"method={method}", f"out={out}", "telemetry.flush_every=100", *overrides]))
        data = [b for b, _ in zip(batches(trial.data.train, trial.cfg.batch_size, shuffle=True,
                                          generator=torch.Generator().manual_seed(0)), range(64))]
        step_s = telemetry_s = trigger_s = 0.0
        trial.trigger = armed(Trigger())
        syncs: dict[str, list[int]] = {"step": [], "flush": []}
        with frozen_heap():  # as in Trial.train_epoch
            for i in range(steps + 5):
                x, y, _ = data[i % len(data)]
                trial.step = i
                sync(trial.device)
                counts: list[int] = []
                t0 = time.perf_counter()
                with counting_syncs(trial.device, counts):
                    s = trial.optimise(x, y, 0.01)
                sync(trial.device)
                t1 = time.perf_counter()
                with counting_syncs(trial.device, counts):
                    trial.telemetry(0, 0.01, s)
                sync(trial.device)
                if i >= 5:
                    t2 = time.perf_counter()
                    step_s, telemetry_s = step_s + t1 - t0, telemetry_s + t2 - t1
                    if trial.log.pending == 0:  # a block was flushed: the trigger reads it on the host
                        trial._watch(trial.log.last_flush)
                        trigger_s += time.perf_counter() - t2
                    syncs["flush" if trial.log.pending == 0 else "step"].append(sum(counts))
                elif i == 4:  # the first Parquet write imports pyarrow's lazy modules (~0.5 s, once per process)
                    trial.log.flush()
        trial.log.flush()
        return {"step_ms": step_s / steps * 1e3, "telemetry_ms": telemetry_s / steps * 1e3,
                "overhead": telemetry_s / step_s, "trigger": trigger_s / step_s, "natural_every": trial.natural_every, "device": str(trial.device),
                "flushes": len(syncs["flush"]), **({"host_syncs": sum(syncs["step"]), "flush_syncs": sum(syncs["flush"])}
                                                   if trial.device.type == "cuda" else {"host_syncs": None})}


def armed(trigger: Trigger) -> Trigger:
    """`trigger` with a reference from a made-up epoch -1, so that epoch 0's rows are scored (CUSUM updates)."""
    n = 40
    trigger.update([-1] * n, list(range(-n, 0)), {s: [0.5 + 0.01 * (i % 7) for i in range(n)] for s in trigger.signals})
    return trigger


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["fgsm", "rs_fgsm", "pgd", "trades", "jeat"])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per method (2 Parquet flushes)")
    ap.add_argument("--json", type=Path, default=None, help="write {method: figures} to this file")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=preact_resnet18 device=cuda")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, overrides {args.overrides or '-'}")
    print(f"{'method':<10} {'step ms':>9} {'telemetry ms':>13} {'overhead':>9} {'trigger':>8} {'natural_every':>14} "
          f"{'host syncs (steps / flushes)':>29}")
    rows = {}
    for method in args.methods:
        r = rows[method] = measure(method, args.steps, args.overrides)
        syncs = f"{r['host_syncs']} / {r['flush_syncs']}" if r["device"].startswith("cuda") else "not checked (CPU)"
        print(f"{method:<10} {r['step_ms']:>9.2f} {r['telemetry_ms']:>13.3f} {r['overhead']:>9.2%} {r['trigger']:>8.3%} "
              f"{r['natural_every']:>14} {syncs:>29}", flush=True)
        if args.json:  # after each method: a later one that fails or times out leaves these
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
