"""Every detector setting is a config field: `detect.ro.patience=20` reaches the trial's live stop rule,
and `energy-at detect --set` gives the offline decision the trial took with the same settings.

Real training on Fashion-MNIST: a 4-epoch trial whose lr decays after epoch 2. With `ro`'s patience 0 and its
val-fall condition off (`detect.ro.fall_z=null`; the energy condition is off by default), ro fires at the first
epoch after the decay; with the defaults (val PGD 3.5 standard errors below its best since the decay: about 0.3
on 64 val images) it does not, which the replay without the settings shows on the same logs.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from analysis.detectors import DETECTORS, DetectorSettings, settings
from orchestrator.config import compose_trial
from orchestrator.stopper import stop_rule

TRIAL = ["method=pgd", "attack.steps=2", "attack.eps=0.1", "epochs=4", "schedule=piecewise", "schedule.milestones=[0.5]",
         "data.subset=256", "data.val_size=64", "data.probe_size=32", "data.test_size=64", "eval.pgd_steps=2",
         "threads=1", "device=cpu", "stop_on=[ro]"]
RO_AT_THE_DECAY = ["ro.patience=0", "ro.fall_z=null"]


def energy_at(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, timeout=600)


def test_the_settings_are_the_detectors_keyword_defaults() -> None:
    import inspect

    d = DetectorSettings()
    for kind, fn in DETECTORS.items():
        defaults = {q.name: q.default for q in inspect.signature(fn).parameters.values() if q.kind is q.KEYWORD_ONLY}
        assert vars(getattr(d, kind)) == defaults, kind
    cfg = compose_trial([f"detect.{s}" for s in RO_AT_THE_DECAY])
    assert stop_rule(cfg).params["ro"] == settings(RO_AT_THE_DECAY)["ro"] == {
        "patience": 0, "gap_rise": None, "energy": DetectorSettings().ro.energy, "fall_z": None,
        "fall_epochs": DetectorSettings().ro.fall_epochs}


def test_a_setting_reaches_the_live_stop_rule_and_detect_set_replays_it(tmp_path) -> None:
    r = energy_at("train", *TRIAL, *[f"detect.{s}" for s in RO_AT_THE_DECAY], f"out={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(next(tmp_path.glob("trials/*/result.json")).read_text())
    assert (result["status"], result["stopped_by"], result["epochs_done"]) == ("stopped", "ro", 3), result

    replay = energy_at("detect", str(tmp_path), "--format", "json", *[a for s in RO_AT_THE_DECAY for a in ("--set", s)])
    assert replay.returncode == 0, replay.stderr
    ro = [e for e in json.loads(replay.stdout) if e["kind"] == "ro"]
    assert [(e["epoch"], e["action"]) for e in ro] == [(2, "stopped")]  # the first epoch after the decay (0-based)
    default = json.loads(energy_at("detect", str(tmp_path), "--format", "json").stdout)
    assert not [e for e in default if e["kind"] == "ro"]  # the defaults would not have stopped it


@pytest.mark.parametrize("item, message", [
    ("ro.pattience=2", "--set ro.pattience: unknown key; did you mean ro.patience? allowed: energy, fall_epochs, fall_z, gap_rise, patience"),
    ("rox.patience=2", "--set rox: unknown key; did you mean ro? allowed: co_energy, co_pgd_probe, nan, ro"),
    ("ro.patience=soon", "--set ro.patience: Value 'soon' of type 'str' could not be converted to Integer"),
    ("ro=2", "--set 'ro=2': write KIND.SETTING=VALUE, e.g. ro.patience=20"),
])
def test_a_bad_set_is_one_line_before_anything_is_read(tmp_path, item: str, message: str) -> None:
    r = energy_at("detect", str(tmp_path / "missing"), "--set", item)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"energy-at detect: error: {message}"), r.stderr



def test_a_grid_over_a_stop_setting_says_how_to_compare_settings() -> None:
    """The settings do not change the trial's id: a train -m grid over them would train one trial twice."""
    from orchestrator.multirun import plan
    from workloads.config import ConfigError

    with pytest.raises(ConfigError, match=r"detect\.ro\.patience is how the run is watched, not what the trial "
                                          r"computes; .* energy-at detect OUT --set KIND\.SETTING=VALUE"):
        plan(["detect.ro.patience=3,7", "epochs=1"])
