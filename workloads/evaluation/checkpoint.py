"""Find trained trials on disk and rebuild their models from checkpoint + config.json.

Layout written by `workloads.trial.Trial`:

    <out>/checkpoints/trial=<id>/{last,best}.pt     ["model"] is the state dict
    <out>/trials/trial=<id>/config.json             flattened TrialConfig ("model.name": ...)

A path given on the command line may be a checkpoint file, a trial's folder
(`<out>/checkpoints/trial=<id>` or `<out>/trials/trial=<id>`) or a sweep / train
out directory (every trial in it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from workloads.config import TRIAL_FIELDS, ConfigError, TrialConfig, from_dict
from workloads.data import DATASETS, Dataset, load_dataset
from workloads.models import build_model
from workloads.run_dir import CheckpointError, RunDir

WHICH = ("best", "last")


@dataclass
class TrialRef:
    """One checkpoint of one trial."""

    trial: str
    checkpoint: Path
    config_path: Path
    sweep_dir: Path  # the `out` the trial wrote to: evaluation tables go under it
    which: str  # best | last | file

    def config(self) -> TrialConfig:
        return load_config(self.config_path)


def unflatten(flat: dict) -> dict:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path) -> TrialConfig:
    """The TrialConfig stored in a trial's config.json."""
    try:
        flat = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read trial config {path}: {e}") from None
    nested = {k: v for k, v in unflatten(flat).items() if k in TRIAL_FIELDS}  # config.json also holds the run's
    try:
        return from_dict(nested)
    except ConfigError as e:
        raise CheckpointError(f"bad trial config {path}: {e}") from None


def _trial_refs(sweep: Path, trial: str, which: str) -> TrialRef:
    run_dir = RunDir(sweep)
    return TrialRef(trial, run_dir.checkpoint(trial, which), run_dir.config_file(trial), sweep, which)


def resolve(path: str | Path, which: str = "best") -> list[TrialRef]:
    """The checkpoints a command-line path names (see the module doc); CheckpointError if none."""
    if which not in WHICH:
        raise CheckpointError(f"--which: unknown value {which!r}; allowed: {', '.join(WHICH)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"no such file or directory: {path}")
    if p.is_file():
        if p.suffix != ".pt":
            raise CheckpointError(f"{path} is not a checkpoint (.pt), a trial folder or a sweep directory")
        owner = RunDir.of_trial_folder(p.parent)
        if owner is None or p.parent.parent.name != "checkpoints":
            raise CheckpointError(f"{path}: expected <out>/checkpoints/trial=<id>/<name>.pt, next to "
                                  f"<out>/trials/trial=<id>/config.json")
        run_dir, trial = owner
        refs = [TrialRef(trial, p, run_dir.config_file(trial), run_dir.root, p.stem if p.stem in WHICH else "file")]
    elif (owner := RunDir.of_trial_folder(p)) is not None:
        refs = [_trial_refs(owner[0].root, owner[1], which)]
    elif trials := RunDir(p).checkpointed():
        refs = [_trial_refs(p, t, which) for t in trials]
        missing = [r for r in refs if not r.checkpoint.exists()]
        refs = [r for r in refs if r.checkpoint.exists()]
        for r in missing:
            print(f"warning: trial {r.trial} has no {which}.pt; skipped")
        if not refs:
            raise CheckpointError(f"no {which}.pt under {p}/checkpoints/trial=*/")
    else:
        raise CheckpointError(f"{path} holds no checkpoints/ folder: pass a checkpoint .pt, a trial folder "
                              f"or a sweep (train out=) directory")
    for r in refs:
        if not r.checkpoint.exists():
            raise CheckpointError(f"no checkpoint {r.checkpoint}")
        if not r.config_path.exists():
            raise CheckpointError(f"checkpoint {r.checkpoint} has no trial config at {r.config_path}")
    return refs


def build_from_config(cfg: TrialConfig, device: torch.device | str = "cpu") -> nn.Module:
    """An untrained model of the trial's architecture for its dataset."""
    info = DATASETS[cfg.data.name]
    c, h, _ = info.shape
    return build_model(cfg.model.name, info.num_classes, c, h, info.mean, info.std).to(device)


def load_model(checkpoint: str | Path, config: TrialConfig | str | Path,
               device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The trained model (eval mode) of a checkpoint, and the checkpoint's other fields (epoch, ...)."""
    cfg = config if isinstance(config, TrialConfig) else load_config(config)
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
        raise CheckpointError(f"cannot load checkpoint {checkpoint}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{checkpoint} holds no 'model' state dict")
    model = build_from_config(cfg, device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint} does not match model {cfg.model.name} on {cfg.data.name}: "
                              f"{str(e).splitlines()[0]}") from None
    model.eval()
    return model, {k: v for k, v in state.items() if k in ("epoch", "step", "best", "trial")}


def load_trial(ref: TrialRef, device: torch.device | str = "cpu") -> tuple[nn.Module, TrialConfig, dict]:
    cfg = ref.config()
    model, meta = load_model(ref.checkpoint, cfg, device)
    return model, cfg, meta


def trial_data(cfg: TrialConfig, device: torch.device | str = "cpu", test_size: int | None = None) -> Dataset:
    """The trial's dataset with its own split seed (val is the trial's held-out validation set)."""
    d = cfg.data
    return load_dataset(d.name, d.root, subset=d.subset, val_size=d.val_size, probe_size=d.probe_size,
                        test_size=test_size, label_noise=d.label_noise, seed=cfg.seed, device=device)
