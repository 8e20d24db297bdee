"""Each default is written once: the dataclasses (workloads.config, orchestrator.sweep) hold every
default, and a preset (orchestrator/conf/<group>/<option>.yaml, train.yaml, sweep.yaml) holds only
its name and what it changes."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orchestrator.sweep import ClusterConfig, SweepSettings
from workloads.config import TrialConfig

CONF = Path(__file__).resolve().parents[1] / "orchestrator" / "conf"
TRIAL = asdict(TrialConfig())
DEFAULTS = {**{group: TRIAL[group] for group in ("attack", "data", "method", "model", "optim", "schedule")},
            "cluster": asdict(ClusterConfig()), "sweep": asdict(SweepSettings())}
IDENTITY = {"name", "kind"}  # which option this is: stated even when it is the default one


def restated(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    """The keys of `values` (nested) whose value equals the dataclass default."""
    out = []
    for key, value in values.items():
        if key in ("defaults", "hydra") or (not prefix and key in IDENTITY):
            continue
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            out += restated(value, default, f"{prefix}{key}.")
        elif key in defaults and value == default:
            out.append(f"{prefix}{key}: {value!r}")
    return out


@pytest.mark.parametrize("path", sorted(CONF.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_preset_holds_only_what_it_changes(path: Path) -> None:
    values = OmegaConf.to_container(OmegaConf.load(path)) or {}
    assert restated(values, DEFAULTS[path.parent.name]) == []


@pytest.mark.parametrize("name, defaults", [("train.yaml", TRIAL), ("sweep.yaml", {})])
def test_the_command_configs_hold_no_default(name: str, defaults: dict) -> None:
    assert restated(OmegaConf.to_container(OmegaConf.load(CONF / name)), defaults) == []


def test_restated_finds_a_default_at_any_depth() -> None:
    assert restated({"name": "x", "lr": 0.05, "betas": [0.9, 0.999], "momentum": 0.5}, TRIAL["optim"]) == [
        "lr: 0.05", "betas: [0.9, 0.999]"]
    assert restated({"resources": {"cpus": 1, "gpus": 0.5}}, DEFAULTS["sweep"]) == ["resources.cpus: 1"]
