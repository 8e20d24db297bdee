"""Experiment trackers as options: `tracking=[mlflow,wandb,tensorboard]` (docs/tracking.md).

    feed.py                 a trial's new epochs (downsampled batch stream + epoch metrics) and final results
    mlflow_backend.py, wandb_backend.py, tensorboard_backend.py   one tracker each, its own client API
    sync.py                 TrackingSync(out, names): update(trial) / finish(trial), resume state per trial
    callback.py             TrackingCallback(out, names): the same from a Ray Tune driver

A tracker's library is imported only when that tracker is asked for.
"""
from __future__ import annotations

from orchestrator.tracking.sync import TrackingSync

__all__ = ["TrackingSync", "TrackingCallback"]


def __getattr__(name: str):
    if name == "TrackingCallback":  # imports Ray: only when asked for
        from orchestrator.tracking.callback import TrackingCallback

        return TrackingCallback
    raise AttributeError(name)
