"""`sweep.search=optuna`: Tune's OptunaSearch samples the sweep's axes; everything it can pick is validated first.

The unit tests check the space and its validation; one real sweep on embedded Ray runs Optuna with ASHA
and the energy stopper and reads Tune's results back.
"""
import json
import subprocess
import sys

import pytest

from analysis.detectors import DetectorSettings
from orchestrator.config import ConfigError
from orchestrator.sweep import SweepPlan

SEARCH = ["sweep=smoke", "sweep.search=optuna", "attack.eps=interval(0.05,0.3)", "optim.lr=tag(log,interval(0.01,0.1))"]


def test_the_space_is_choices_and_ranges_and_a_suggestion_becomes_a_validated_trial(tmp_path):
    from ray.tune.search.sample import Categorical, Float

    plan = SweepPlan.from_overrides([*SEARCH, f"sweep.out={tmp_path}"])
    assert plan.trials == [] and len(plan.search.bases) == 2  # method=fgsm,rs_fgsm x seed=0
    space = plan.search.param_space()
    assert isinstance(space["method"], Categorical) and space["method"].categories == ["fgsm", "rs_fgsm"]
    assert isinstance(space["attack.eps"], Float) and (space["attack.eps"].lower, space["attack.eps"].upper) == (0.05, 0.3)
    assert "LogUniform" in type(space["optim.lr"].sampler).__name__
    cfg = plan.search.config({"method": "rs_fgsm", "attack.eps": 0.123, "optim.lr": 0.02})
    assert (cfg.method.name, cfg.attack.eps, cfg.optim.lr, cfg.epochs) == ("rs_fgsm", 0.123, 0.02, 2)
    assert cfg.trial_id.startswith("rs_fgsm-s0-") and cfg.out == str(tmp_path)
    # rs_fgsm's own attack defaults (Hydra's method group) are kept; only the sampled leaves change
    assert cfg.attack.name == plan.search.config({"method": "rs_fgsm", "attack.eps": 0.2,
                                                  "optim.lr": 0.05}).attack.name
    again = plan.search.config({"method": "rs_fgsm", "attack.eps": 0.123, "optim.lr": 0.02})
    assert again.trial_id == cfg.trial_id  # the same values are the same trial (it resumes, not repeats)


@pytest.mark.parametrize("args, field, words", [
    # the high end of a range is validated before anything runs, not when Optuna first draws it
    (["data.probe_size=interval(16,1000)"], "data.probe_size", "data.subset"),
    (["optim.lr=tag(log,interval(0,0.1))"], "optim.lr", "bounds > 0"),
    (["sweep.search=bayes"], "sweep.search", "grid, optuna"),
    (["sweep.scheduler=pbt"], "sweep.scheduler", "asha"),
])
def test_bad_search_settings_are_refused_before_anything_runs(tmp_path, args, field, words):
    with pytest.raises(ConfigError) as e:
        SweepPlan.from_overrides([*SEARCH, *args, f"sweep.out={tmp_path / 'x'}"])
    assert field in str(e.value) and words in str(e.value), str(e.value)
    assert not (tmp_path / "x").exists()


def test_optuna_missing_is_named_with_the_extra_to_install(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec  # stands in for an environment without optuna
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"sweep.search: optuna is not installed: pip install 'energy-at\[optuna\]'"):
        SweepPlan.from_overrides([*SEARCH, f"sweep.out={tmp_path}"])


@pytest.mark.slow
def test_an_optuna_sweep_with_asha_and_the_energy_stopper_runs_on_embedded_ray(tmp_path):
    args = [*SEARCH, "sweep.num_samples=3", "sweep.scheduler=asha", "sweep.report=false", f"sweep.out={tmp_path}",
            "sweep.detect.nan.patience=6"]
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", *args], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 trials picked by optuna from 2 validated categorical combination(s)" in r.stdout

    plan = SweepPlan.from_overrides(args)
    assert list((tmp_path / "tune" / tmp_path.name).glob("searcher-state-*.pkl"))  # Tune saved the searcher's state
    grid = plan.tuner().get_results()  # Tuner.restore of <out>/tune/<out's name>
    assert grid.num_errors == 0 and len(grid) == 3
    ran = {}
    for result in grid:
        c = result.config
        assert c["method"] in ("fgsm", "rs_fgsm") and 0.05 <= c["attack.eps"] <= 0.3 and 0.01 <= c["optim.lr"] <= 0.1
        tid = result.metrics["trial"]
        cfg = json.loads((tmp_path / "trials" / f"trial={tid}" / "config.json").read_text())
        assert (cfg["method.name"], cfg["attack.eps"], cfg["optim.lr"]) == (c["method"], c["attack.eps"], c["optim.lr"])
        assert "co_pgd_probe" in cfg["stop_on"]  # the energy stopper ran in every trial
        assert cfg["detect.nan.patience"] == 6 and cfg["detect.ro.gap_rise"] == DetectorSettings().ro.gap_rise  # the sweep's settings
        result_json = json.loads((tmp_path / "trials" / f"trial={tid}" / "result.json").read_text())
        assert result_json["status"] in ("finished", "stopped"), result_json
        if result_json["stopped_by"] == "asha":  # ASHA ended it: recorded as such, not left `running`
            assert result_json["reason"].startswith("asha: Tune's scheduler ended the trial after epoch")
            assert result_json["epochs_done"] == result.metrics["epoch"] + 1
        ran[tid] = c["attack.eps"]
    assert len(set(ran.values())) == 3  # three different draws, each its own trial
    assert (tmp_path / "batches").is_dir() and sorted(p.name for p in (tmp_path / "batches").iterdir()) == sorted(ran)
