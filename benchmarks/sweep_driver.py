"""A simulated sweep of many trials reporting epochs to one Tune driver: what the stopper costs there.

    python benchmarks/sweep_driver.py [--trials 500] [--epochs 10] [--steps 400] [--cpus 0.25] [--baseline] [--out DIR]

Plans a real sweep (`SweepPlan.from_overrides`: method x eps x seeds, validated, the project's
Tuner with its driver callbacks) and runs it on embedded Ray with the one thing swapped: the
trainable does not train. Each simulated trial writes its telemetry epoch by epoch as a
trial does (analysis_scan.py's synthetic curves, healthy / CO / RO / NaN, through the project's
PartWriter, a part every `telemetry.flush_every`=100 steps, compacted one epoch behind), runs the
trial's real stop rule (`stop_rule(cfg)`: `EnergyStop` on its own logs) after every epoch, ends
when the rule fires, and reports each epoch to Tune with a checkpoint, as `trainable._run` does.

Measured in the one process that is the Tune driver:
  - the driver's wall time and CPU time over `Tuner.fit()`;
  - the time spent in energy-at's driver callbacks (`SweepPlan.callbacks()`: `SchedulerStops`,
    the only stop-related code left on the driver), timed hook by hook;
and, reported by the trials, the stop rule's time per report and its share of each trial's time.
The stopper's share of the driver's time is (energy-at callback time) / (driver wall time).

`--baseline` adds, on the same driver, what the stopper did before it moved into the trials: at
every epoch report, `first_event` (a fresh read of the trial's logs and the detectors on all of
it), timed separately; the trials still stop themselves, so both designs decide the same and the
sweep is the same one. It makes the driver slower, so its share is measured against that wall.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

def simulated_trial(config: dict, configs: dict[str, dict]) -> None:
    """Stands in for `trainable.run_trial`: the same reports, checkpoints and stop rule, no training."""
    import numpy as np
    import pyarrow.compute as pc
    from ray import tune

    from analysis_scan import _trial, write_epoch
    from orchestrator.stopper import stop_rule
    from workloads.config import from_dict
    from workloads.run_dir import RunDir
    from workloads.telemetry.writer import PartWriter

    t_start = time.perf_counter()
    cfg = from_dict(configs[config["trial"]])
    tid, i, steps = cfg.trial_id, list(configs).index(config["trial"]), int(os.environ["SIM_STEPS"])
    run_dir = RunDir(cfg.out)
    run_dir.write_config(tid, configs[config["trial"]])
    run_dir.write_result(tid, {"trial": tid, "status": "running", "epochs_done": 0})
    table, etable, _ = _trial(i, cfg.epochs, steps, np.random.default_rng(1000 + i), name=tid)
    batches, epochs = PartWriter(cfg.out, "batches", tid, seq=0), PartWriter(cfg.out, "epochs", tid, seq=0)
    rule, committed, stop_s, status = stop_rule(cfg), {"batches": 0, "epochs": 0}, 0.0, "finished"
    val = etable.filter(pc.equal(etable["split"], "val"))["acc_pgd"].to_pylist()
    for e in range(cfg.epochs):
        committed = write_epoch(batches, epochs, table, etable, e, steps, committed)
        t0 = time.perf_counter()
        event = rule({"epoch": e}) if rule else None
        stop_s += time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "last.pt").write_bytes(os.urandom(120_000))  # about small_cnn's state dict
            tune.report({"trial": tid, "epoch": e, "step": (e + 1) * steps - 1, "val_acc_pgd": val[e],
                         "stop_s": stop_s, "trial_s": time.perf_counter() - t_start, "stopped": event is not None},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
        if event is not None:
            status = "stopped"
            break
    batches.compact(batches.seq)  # as the trial does when it ends
    epochs.compact(epochs.seq)
    run_dir.write_result(tid, {"trial": tid, "status": status, "epochs_done": e + 1})


def timed(callback) -> dict:
    """Times every hook of a Tune callback in place; returns {"seconds", "calls"}, kept up to date."""
    from ray.tune import Callback

    total = {"seconds": 0.0, "calls": 0}
    for name in [n for n in dir(Callback) if n.startswith("on_") or n == "setup"]:
        hook = getattr(callback, name)

        def wrapper(*args, _hook=hook, **kwargs):
            t0 = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                total["seconds"] += time.perf_counter() - t0
                total["calls"] += 1
        setattr(callback, name, wrapper)
    return total


def main(argv: list[str] | None = None) -> int:
    from workloads.config import OneLineParser

    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=500, help="a multiple of 10 (2 methods x 5 eps x seeds)")
    ap.add_argument("--epochs", type=int, default=10, help="at least 8 (the synthetic curves need them)")
    ap.add_argument("--steps", type=int, default=400, help="batch rows an epoch")
    ap.add_argument("--cpus", type=float, default=0.25, help="sweep.resources.cpus: trials at once = cores / this")
    ap.add_argument("--baseline", action="store_true", help="also time the stop rule run on the driver (before)")
    ap.add_argument("--out", default=None, help="sweep directory (default: a temp folder, removed after)")
    a = ap.parse_args(argv)
    if a.trials % 10 or a.epochs < 8:
        ap.error("--trials must be a multiple of 10 and --epochs at least 8")

    import ray
    from ray.tune import Callback

    import orchestrator.trainable
    from orchestrator.stopper import first_event
    from orchestrator.sweep import SweepPlan

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp) / "sweep"
        plan = SweepPlan.from_overrides([
            f"sweep.out={out}", "sweep.report=false", f"sweep.resources.cpus={a.cpus}",
            "method=fgsm,rs_fgsm", "attack.eps=0.15,0.2,0.25,0.3,0.35", f"seed=range(0,{a.trials // 10})",
            f"epochs={a.epochs}"])
        callbacks = plan.callbacks()
        times = [timed(c) for c in callbacks]

        class Counter(Callback):
            results = 0

            def on_trial_result(self, iteration, trials, trial, result, **info):
                Counter.results += 1

        class DriverStop(Callback):  # the baseline: the stop rule on the driver, a fresh read per report
            seconds = 0.0

            def on_trial_result(self, iteration, trials, trial, result, **info):
                t0 = time.perf_counter()
                first_event(out, result["trial"], result["epoch"], plan.settings.stop_on)
                DriverStop.seconds += time.perf_counter() - t0

        plan.callbacks = lambda: [*callbacks, Counter(), *([DriverStop()] if a.baseline else [])]
        orchestrator.trainable.run_trial = simulated_trial  # what plan.tuner() wraps
        ray.init(include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
                                           "SIM_STEPS": str(a.steps)}})
        tuner = plan.tuner()
        w0, c0 = time.perf_counter(), time.process_time()
        grid = tuner.fit()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        ray.shutdown()
        last = [r.metrics for r in grid if r.metrics]
        stopped = sum(bool(m.get("stopped")) for m in last)
        stop_s, trial_s = sum(m["stop_s"] for m in last), sum(m["trial_s"] for m in last)
        reports = sum(m["epoch"] + 1 for m in last)
        cb_s, cb_calls = sum(t["seconds"] for t in times), sum(t["calls"] for t in times)
        errors = sum(r.error is not None for r in grid)
    print(f"{a.trials} simulated trials x up to {a.epochs} epochs of {a.steps} batch rows, "
          f"{a.cpus} CPU each on {os.cpu_count()} cores; {stopped} stopped by their energy stop rule; "
          f"{reports} epoch reports reached the driver ({Counter.results} results); {errors} errors")
    base = (f"{DriverStop.seconds:.1f} s, {100 * DriverStop.seconds / wall:.1f}%" if a.baseline else "not run")
    print("| driver wall s | driver CPU s | energy-at driver callbacks s (calls) | their share of driver wall | "
          "baseline: stop rule on the driver (share) | stop rule s per report (in trials) | "
          "stop rule share of trial time |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {wall:.1f} | {cpu:.1f} | {cb_s:.3f} ({cb_calls}) | {100 * cb_s / wall:.2f}% | {base} | "
          f"{stop_s / max(reports, 1):.3f} | {100 * stop_s / max(trial_s, 1e-9):.1f}% |")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
