"""Every trial field `energy-at train` accepts, `sweep` accepts too: the sweep's list is derived from
`TrialConfig`, not written by hand (orchestrator/sweep.py TRIAL_KEYS)."""
from __future__ import annotations

import subprocess
import sys

from orchestrator.sweep import SWEEP_SETS, TRIAL_KEYS, SweepPlan
from workloads.config import TrialConfig, flatten


def hydra_value(v) -> str:
    """A Python value as a Hydra override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return f"'{v}'" if isinstance(v, str) else repr(v)


def test_sweep_accepts_every_trial_field(tmp_path) -> None:
    fields = {k: v for k, v in flatten(TrialConfig()).items() if k.split(".")[0] not in SWEEP_SETS}
    assert {k.split(".")[0] for k in fields} == TRIAL_KEYS
    overrides = [f"{k}={hydra_value(v)}" for k, v in fields.items()]
    changed = ["precision=bf16", "channels_last=true", "epochs=3", "attack.eps=8/255", "device=cpu"]
    plan = SweepPlan.from_overrides([*overrides, *changed, f"sweep.out={tmp_path}"])
    (trial,) = plan.trials
    assert (trial.precision, trial.channels_last, trial.epochs, trial.device) == ("bf16", True, 3, "cpu")
    assert trial.attack.eps == 8 / 255


def test_sweep_fast_path_on_the_command_line(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", "sweep=smoke", "precision=bf16",
                        "channels_last=true", f"sweep.out={tmp_path}", "--cfg", "job"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
