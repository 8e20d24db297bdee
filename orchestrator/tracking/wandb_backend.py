"""Weights & Biases: one run per trial (project WANDB_PROJECT or energy-at, grouped by the run dir's folder).

`wandb.init(..., resume="allow", reinit="create_new")`, so one process (the Tune driver) holds the
runs of several trials at once and a resumed trial continues its run. Online or offline is W&B's own
setting (WANDB_MODE; offline runs lie in `<wandb dir>/wandb/offline-run-*`, `wandb sync` uploads
them). Config: the flattened config; history: the feed's points at their global steps; summary: the
final results and the stop decision.
"""
from __future__ import annotations

import hashlib
import os
import re

import wandb

from orchestrator.tracking.feed import Point, final_metrics, stop_fields
from workloads.run_dir import RunDir, succeeded


def run_id(trial: str, run_dir: RunDir) -> str:
    """A W&B run id for the trial: its id without W&B's reserved characters, plus a short hash of the
    run dir, so the same trial in two run dirs (a config's id is a hash of it) are two W&B runs."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "-", trial)[:56]
    return f"{safe}-{hashlib.sha1(str(run_dir.root.resolve()).encode()).hexdigest()[:6]}"


class Run:
    """An open W&B run of one trial."""

    def __init__(self, run: "wandb.Run"):
        self.run = run

    def log_epoch(self, points: list[Point]) -> None:
        for p in points:
            self.run.log(p.metrics, step=p.step)

    def flush(self) -> None:
        pass

    def finish(self, result: dict, step: int) -> None:
        self.run.summary.update(final_metrics(result) | stop_fields(result))
        self.run.finish(exit_code=0 if succeeded(result) else 1)

    def close(self) -> None:
        self.run.finish(exit_code=1)  # ended before the trial did; a resume reopens it


class Tracker:
    """W&B for the trials of one run dir."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def open(self, trial: str, config: dict, state: dict) -> Run:
        state.setdefault("id", run_id(trial, self.run_dir))
        folder = self.run_dir.wandb_dir()
        folder.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "energy-at"), group=self.run_dir.root.resolve().name,
                         name=trial, id=state["id"], dir=str(folder), config=config, resume="allow",
                         reinit="create_new")
        return Run(run)
