"""`TrackingSync`: push what a trial's files hold to the experiment trackers asked for, each epoch once.

Per trial and tracker the state file `RunDir.tracking_state(trial)` keeps the last epoch pushed and
the tracker's run id, so a resumed trial, a second process or a second sync continues the same run
and never logs an epoch twice. Call `update` only once an epoch is committed (after its checkpoint:
`Trial.run`'s on_epoch, Tune's on_trial_result), so no epoch a resume would recompute is pushed.
A tracker that fails is reported on stderr (and in `errors`) and does not stop the trial; its state
stays where it was, so the next sync retries.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Protocol, Sequence

from orchestrator.tracking.feed import FINAL_KEYS, STOP_KEYS, Point, new_epochs
from orchestrator.tracking.trackers import TRACKERS, check_trackers
from workloads.run_dir import RunDir

BACKENDS = {name: f"orchestrator.tracking.{name}_backend" for name in TRACKERS}  # each a Tracker class


class Run(Protocol):
    """An open run of one trial in one tracker (the backends' `Run`)."""
    def log_epoch(self, points: list[Point]) -> None: ...
    def flush(self) -> None: ...
    def finish(self, result: dict, step: int) -> None: ...
    def close(self) -> None: ...


class TrackingSync:
    """The trials of one run dir `out` in the trackers `names` (a subset of trackers.TRACKERS)."""

    def __init__(self, out: str | os.PathLike, names: Sequence[str]):
        check_trackers(list(names))
        self.run_dir, self.names = RunDir(out), tuple(dict.fromkeys(names))
        self.trackers: dict[str, object] = {}  # name -> the backend's Tracker, made (and imported) when first used
        self.runs: dict[tuple[str, str], Run] = {}  # (tracker, trial) -> its open run
        self.errors: list[str] = []

    def update(self, trial: str) -> None:
        """Push the trial's epochs that a tracker has not got yet (batch stream first, then epoch metrics)."""
        config = self.run_dir.read_config(trial)
        if config is None or not self.names:
            return
        state = self.run_dir.read_tracking(trial)
        last = {n: state.get(n, {}).get("last_epoch", -1) for n in self.names}
        try:
            epochs = new_epochs(self.run_dir, trial, min(last.values()))
        except Exception as error:  # an unreadable part: the next sync reads again
            self._warn("reading", trial, error)
            return
        for name in self.names:
            todo = [e for e in epochs if e.epoch > last[name]]
            if not todo:
                continue
            mine = state.setdefault(name, {})
            try:
                run = self._open(name, trial, config, mine)
                for epoch in todo:
                    run.log_epoch(epoch.points)
                    mine["last_epoch"], mine["last_step"] = epoch.epoch, epoch.points[-1].step
                run.flush()
            except Exception as error:  # a tracker never ends the trial
                self._warn(name, trial, error)
            finally:
                self.run_dir.write_tracking(trial, state)

    def finish(self, trial: str, failed: bool = False) -> None:
        """Push the rest, then the final results and the stop decision of result.json, and close the runs.

        A result.json still saying `running` (the trial's process ended without its summary) is
        recorded as `interrupted`, or as `failed` with `failed` (Tune's on_trial_error). A finish that
        has nothing new to say is skipped."""
        self.update(trial)
        result = self.run_dir.read_result(trial) or {}
        if failed and result.get("status") in (None, "running"):
            result |= {"status": "failed", "reason": result.get("reason") or "the trial's process failed"}
        elif result.get("status") == "running":
            result |= {"status": "interrupted"}
        if not result:
            return
        config = self.run_dir.read_config(trial) or {}
        final = {k: result.get(k) for k in (*FINAL_KEYS, *STOP_KEYS, "steps_done")}
        state = self.run_dir.read_tracking(trial)
        for name in self.names:
            mine = state.setdefault(name, {})
            if mine.get("final") == final and (name, trial) not in self.runs:
                continue
            step = max(int(result.get("steps_done") or 0) - 1, mine.get("last_step", 0))  # never before a pushed step
            try:
                self._open(name, trial, config, mine).finish(result, step)
                mine["final"] = final
            except Exception as error:
                self._warn(name, trial, error)
            finally:
                self.runs.pop((name, trial), None)
                self.run_dir.write_tracking(trial, state)

    def close(self) -> None:
        """Close the runs still open (their trials have not ended: a resume reopens them)."""
        for (name, trial), run in list(self.runs.items()):
            try:
                run.close()
            except Exception as error:
                self._warn(name, trial, error)
            finally:
                del self.runs[name, trial]

    def _open(self, name: str, trial: str, config: dict, state: dict) -> Run:
        if (name, trial) not in self.runs:
            if name not in self.trackers:
                self.trackers[name] = importlib.import_module(BACKENDS[name]).Tracker(self.run_dir)
            self.runs[name, trial] = self.trackers[name].open(trial, config, state)  # type: ignore[attr-defined]
        return self.runs[name, trial]

    def _warn(self, name: str, trial: str, error: Exception) -> None:
        message = f"energy-at: {name} tracking of trial {trial} failed: {type(error).__name__}: {error}".splitlines()[0]
        self.errors.append(message)
        print(message, file=sys.stderr)
