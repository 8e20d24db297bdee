"""`TrackingCallback`: a Ray Tune callback that syncs a sweep's trials to the trackers from the driver.

    tune.RunConfig(callbacks=[TrackingCallback(sweep_dir, ["mlflow", "wandb"])])

Each Tune report of a trial (after its epoch's checkpoint) pushes its new epochs; a trial's end
pushes its final results and stop decision. The trial id is the `trial` key every report carries
(`orchestrator/trainable.py`), or the trial's Tune config `trial` before its first report.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ray.tune import Callback

from orchestrator.tracking.sync import TrackingSync


def trial_id(trial: Any) -> str | None:
    """The energy-at trial id of a Tune Trial: its last result's `trial`, else its config's."""
    last, config = getattr(trial, "last_result", None) or {}, getattr(trial, "config", None) or {}
    tid = last.get("trial") or config.get("trial")
    return tid if isinstance(tid, str) else None


class TrackingCallback(Callback):
    """Tune callback: every trial of the sweep dir `out` as a run in each tracker of `names`."""

    def __init__(self, out: str | os.PathLike, names: Sequence[str]):
        super().__init__()
        self.out, self.names = out, list(names)
        self.sync = TrackingSync(out, names)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info) -> None:
        tid = result.get("trial")
        if isinstance(tid, str):
            self.sync.update(tid)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        if tid := trial_id(trial):
            self.sync.finish(tid)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        if tid := trial_id(trial):
            self.sync.finish(tid, failed=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.sync.close()

    def __getstate__(self) -> dict:
        """Pickled (Tune saves its callbacks with the experiment) without the open runs: they reopen from
        the state files."""
        return {"out": self.out, "names": self.names}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["out"], state["names"])
