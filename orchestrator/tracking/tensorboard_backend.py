"""TensorBoard: one event folder per trial, `<out>/tensorboard/<trial>/`, through tensorboardX.

Scalars: the feed's points at their global steps. At the end: the stop decision as text (`stop`), and
the config with the final results as HParams, in the trial's `hparams/` session folder (tensorboardX
writes a session beside the run), so `tensorboard --logdir <out>/tensorboard` compares trials.
"""
from __future__ import annotations

import os
import uuid

from tensorboardX import SummaryWriter

from orchestrator.tracking.feed import Point, final_metrics, stop_fields
from workloads.run_dir import RunDir

HPARAMS_SESSION = "hparams"


def hparams(config: dict) -> dict[str, bool | int | float | str]:
    """The config as HParams values: numbers, strings and booleans kept, lists as text, nulls left out."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items() if v is not None}


class Run:
    """An open TensorBoard writer of one trial."""

    def __init__(self, writer: SummaryWriter, config: dict):
        self.writer, self.config = writer, config

    def log_epoch(self, points: list[Point]) -> None:
        for p in points:
            for k, v in p.metrics.items():
                self.writer.add_scalar(k, v, p.step, walltime=p.wall_time)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, result: dict, step: int) -> None:
        self.writer.add_text("stop", "  \n".join(f"{k}: {v}" for k, v in stop_fields(result).items()), step)
        self.writer.add_hparams(hparams(self.config), final_metrics(result), name=HPARAMS_SESSION, global_step=step)
        self.writer.close()

    def close(self) -> None:
        self.writer.close()


class Tracker:
    """TensorBoard for the trials of one run dir."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def open(self, trial: str, config: dict, state: dict) -> Run:
        # a file of its own: tensorboardX names event files by the second and opens them for writing,
        # so a writer reopened in the same second (a resumed trial) would empty the earlier file
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
        return Run(SummaryWriter(logdir=str(self.run_dir.tensorboard(trial)), filename_suffix=suffix), config)
