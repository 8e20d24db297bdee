"""Energy early stopping: the analysis detectors, run by the trial on its own logs after each epoch.

`stop_rule(cfg)` builds the `stop` callable that `Trial.run` calls after each epoch's
evaluation (in `energy-at train`, `train -m` and every Ray Tune trial alike). It reads the
trial's Parquet logs up to that epoch, runs the same detector functions as `energy-at
detect`, and returns the first event of a kind in `cfg.stop_on`; the trial then records it
in `events` (action 'stopped'), evaluates its checkpoints on test and ends, and Tune sees it
end. The detectors are causal, so the decision equals the offline one on the same prefix.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Mapping

import polars as pl

from analysis.detectors import detect
from analysis.read import SweepLogs
from orchestrator.config import DEFAULT_STOP_ON, RunConfig
from workloads.config import trial_id


TABLES = ("batches", "epochs", "probes")  # what `detect` reads


Params = Mapping[str, Mapping[str, Any]] | None  # `detect`'s params: kind -> setting -> value


def first_event(out: str | os.PathLike, trial: str, epoch: int, stop_on=DEFAULT_STOP_ON, params: Params = None) -> dict | None:
    """The earliest event of a kind in `stop_on` in `trial`'s logs up to `epoch`, or None."""
    logs = SweepLogs(out, warn=False, trials=[trial])
    return _earliest({t: logs.scan(t).filter(pl.col("epoch") <= epoch) for t in TABLES}, stop_on, params)


def _earliest(frames: dict[str, pl.LazyFrame | None], stop_on, params: Params = None) -> dict | None:
    """The first event of a kind in `stop_on` that `detect` finds in `frames` (table -> rows or None)."""
    events = detect(frames["batches"], frames["epochs"], frames["probes"], params).filter(pl.col("kind").is_in(stop_on))
    return None if events.is_empty() else events.sort("epoch", "step", nulls_last=True, maintain_order=True).row(0, named=True)


# the telemetry tables each stoppable detector reads (analysis/detectors.py)
NEEDS = {"co_energy": ("batches", "epochs", "probes"), "co_pgd_probe": ("epochs",), "ro": ("epochs",),
         "nan": ("batches",)}


class EnergyStop:
    """A trial's stop rule: `stop(metrics)` -> the first detector event in `stop_on` so far, or None.

    Incremental: it keeps the rows it has read and, after each epoch, reads only the part files
    written since (footer-checked once), and only the tables its detectors need; the detectors
    then run on the whole prefix, so the decision is `first_event`'s (tests/test_stopper_incremental.py).
    """

    def __init__(self, out: str | os.PathLike, trial: str, stop_on=DEFAULT_STOP_ON, params: Params = None):
        self.out, self.trial, self.stop_on, self.params = out, trial, tuple(stop_on), params
        self.tables = sorted({t for kind in self.stop_on for t in NEEDS.get(kind, ())})
        self._logs: SweepLogs | None = None
        self._rows: dict[str, pl.DataFrame] = {}

    def _read(self, table: str) -> pl.DataFrame:
        if self._logs is None:
            self._logs = SweepLogs(self.out, warn=False, trials=[self.trial])
        if table not in self._rows:
            self._rows[table] = self._logs.scan(table).collect()
        else:
            new = self._logs.refresh(table)  # a merged file holding rows already read is not new
            if self._logs.dropped[table]:  # files read before are gone (e.g. a resume truncated them): read again
                self._rows[table] = self._logs.scan(table).collect()
            elif new:
                self._rows[table] = pl.concat([self._rows[table], self._logs.scan(table, new).collect()])
        return self._rows[table]

    def __call__(self, metrics: dict) -> dict | None:
        upto = pl.col("epoch") <= metrics["epoch"]
        return _earliest({t: self._read(t).lazy().filter(upto) if t in self.tables else None for t in TABLES},
                         self.stop_on, self.params)


def stop_rule(cfg: RunConfig) -> EnergyStop | None:
    """The energy stop rule of a trial config (None when `stop_on` is empty)."""
    return EnergyStop(cfg.out, trial_id(cfg), cfg.stop_on, asdict(cfg.detect)) if cfg.stop_on else None
