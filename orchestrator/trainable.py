"""The Ray Tune function that runs one trial: resume from Tune's checkpoint, report every epoch."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ray import tune

from workloads.config import from_dict
from workloads.trial import Trial


def run_trial(config: dict, configs: dict[str, dict]) -> None:
    """Tune trainable: `config["trial"]` is a trial id, `configs[id]` its TrialConfig as a dict (out = the sweep)."""
    cfg = from_dict(configs[config["trial"]])
    ckpt_dir = Path(cfg.out) / "checkpoints" / f"trial={cfg.trial_id}"
    restored = tune.get_checkpoint()
    if restored is not None:  # Tune's copy wins: telemetry is then truncated to match it (exactly once)
        with restored.as_directory() as d:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(d) / "last.pt", ckpt_dir / ".last.pt.tmp")
            os.replace(ckpt_dir / ".last.pt.tmp", ckpt_dir / "last.pt")
    trial = Trial(cfg)

    def on_epoch(metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(trial.checkpoint_dir / "last.pt", Path(tmp) / "last.pt")
            tune.report(metrics | {"trial": trial.id}, checkpoint=tune.Checkpoint.from_directory(tmp))

    trial.run(on_epoch)
