"""What Ray Tune costs: time to the first running trial, and N short trials through Tune vs a plain loop.

    python benchmarks/sweep_overhead.py [--trials 4]

Both arms run the same validated trial configs (the `smoke` preset, seeds 0..N/2-1)
in one process, one after the other: first a plain Python loop of `Trial(cfg).run()`,
then `energy-at sweep` on embedded Ray (started inside the timing) with 1 CPU per
trial. On a 2-core machine Tune runs two trials at once, so its total can beat the loop.
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.sweep import SweepPlan  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.trial import Trial  # noqa: E402


def first_running(sweep_dir: Path, start: float, box: dict) -> None:
    """Poll for the first trial's result.json (written when a trial starts running)."""
    while "t" not in box:
        if any(sweep_dir.glob("trials/*/result.json")):
            box["t"] = time.perf_counter() - start
        time.sleep(0.01)


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    args = ap.parse_args()
    seeds = ",".join(str(s) for s in range(max(1, args.trials // 2)))
    with tempfile.TemporaryDirectory() as tmp:
        loop_plan = SweepPlan.from_overrides(["sweep=smoke", f"seed={seeds}", f"sweep.out={tmp}/loop"])
        start = time.perf_counter()
        first_loop = None
        for cfg in loop_plan.trials:
            trial = Trial(replace(cfg, threads=None))
            first_loop = first_loop or time.perf_counter() - start
            trial.run()
        loop_total = time.perf_counter() - start

        start = time.perf_counter()
        tune_plan = SweepPlan.from_overrides(["sweep=smoke", f"seed={seeds}", f"sweep.out={tmp}/tune",
                                          "sweep.report=false", "sweep.stop_on=[]"])
        box: dict = {}
        threading.Thread(target=first_running, args=(tune_plan.dir, start, box), daemon=True).start()
        tune_plan.run_here()
        tune_total = time.perf_counter() - start
        box.setdefault("t", float("nan"))
    n = len(loop_plan.trials)
    print(json.dumps({"trials": n, "loop_first_trial_s": round(first_loop, 2), "tune_first_trial_s": round(box["t"], 2),
                      "loop_total_s": round(loop_total, 2), "tune_total_s": round(tune_total, 2),
                      "tune_over_loop": round(tune_total / loop_total, 3)}, indent=1))


if __name__ == "__main__":
    main()
