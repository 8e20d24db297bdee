"""Energy early stopping: the analysis detectors, run on each trial's stream as it reports.

A Ray Tune `Stopper` (so it combines with any scheduler, ASHA included). On each
epoch result it reads that trial's Parquet logs up to the reported epoch, runs
the same detector functions as `energy-at detect`, and stops the trial at the
first event of a kind in `stop_on`, recording it in the sweep's `events` table.
The detectors are causal, so the decision equals the offline one on the same prefix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
from ray import tune

from analysis.detectors import detect
from analysis.read import SweepLogs
from workloads.telemetry import PartWriter

DEFAULT_STOP_ON = ("co_energy", "ro", "nan")


def first_event(sweep_dir: str | os.PathLike, trial: str, epoch: int, stop_on=DEFAULT_STOP_ON) -> dict | None:
    """The earliest event of a kind in `stop_on` in `trial`'s logs up to `epoch`, or None."""
    sweep = SweepLogs(sweep_dir, warn=False, trials=[trial])
    frames = {t: sweep.scan(t).filter(pl.col("epoch") <= epoch)
              for t in ("batches", "epochs", "probes")}
    events = detect(frames["batches"], frames["epochs"], frames["probes"]).filter(pl.col("kind").is_in(stop_on))
    if events.is_empty():
        return None
    return events.sort("epoch", "step", nulls_last=True).row(0, named=True)


class EnergyStopper(tune.Stopper):
    """Stops a trial when an energy detector fires; writes the event (action='stopped')."""

    def __init__(self, sweep_dir: str | os.PathLike, stop_on=DEFAULT_STOP_ON):
        self.dir, self.stop_on = Path(sweep_dir), tuple(stop_on)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self.stop_on or "trial" not in result or "epoch" not in result:
            return False
        event = first_event(self.dir, result["trial"], result["epoch"], self.stop_on)
        if event is None:
            return False
        done = {"epochs_done": result["epoch"] + 1}
        if "step" in result:
            done["steps_done"] = result["step"] + 1
        record(self.dir, event | {"action": "stopped"}, done)
        return True

    def stop_all(self) -> bool:
        return False


def record(sweep_dir: Path, event: dict, done: dict | None = None) -> None:
    """Append one event to the sweep's `events` table and mark the trial's result.json as stopped.

    `done` (epochs_done, steps_done at the stop) replaces the progress in result.json, which a
    running trial writes only when it starts and ends (a stopped trial does not reach its end).
    """
    trial = event["trial"]
    PartWriter(sweep_dir, "events", trial).write({k: [v] for k, v in event.items()})
    result_path = sweep_dir / "trials" / f"trial={trial}" / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {"trial": trial}
    result |= (done or {}) | {"status": "stopped",
                              "reason": f"{event['kind']} at epoch {event['epoch']}: {event['evidence']}"}
    tmp = result_path.with_name(".result.json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)
