"""The Ray Tune function that runs one trial: resume from Tune's checkpoint, report every epoch."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ray import tune

from orchestrator.stopper import stop_rule
from workloads.config import from_dict
from workloads.run_dir import RunDir, atomic_write
from workloads.trial import Trial


def run_trial(config: dict, configs: dict[str, dict]) -> None:
    """Tune trainable: `config["trial"]` is a trial id, `configs[id]` its TrialConfig as a dict (out = the sweep)."""
    cfg = from_dict(configs[config["trial"]])
    ckpt_dir = RunDir(cfg.out).checkpoints(cfg.trial_id)
    restored = tune.get_checkpoint()
    if restored is not None:  # Tune's copy wins: telemetry is then truncated to match it (exactly once)
        with restored.as_directory() as d:
            atomic_write(ckpt_dir / "last.pt", lambda tmp: shutil.copy2(Path(d) / "last.pt", tmp))
    trial = Trial(cfg)

    def on_epoch(metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(trial.checkpoint_dir / "last.pt", Path(tmp) / "last.pt")
            tune.report(metrics | {"trial": trial.id}, checkpoint=tune.Checkpoint.from_directory(tmp))

    trial.run(on_epoch, stop=stop_rule(cfg))  # a stop ends this function: Tune sees the trial end
