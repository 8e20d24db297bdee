"""`energy-at sweep` on embedded Ray: validation before anything starts, a real sweep, the energy stopper."""
import json
import subprocess
import sys

import polars as pl
import pytest

from orchestrator.space import expand
from orchestrator.sweep import SweepPlan
from workloads.config import ConfigError


def energy_at(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_space_expands_grid_and_seeded_random_axes():
    trials = expand(["method=fgsm,pgd", "seed=range(2)", "optim.lr=tag(log,interval(0.01,0.1))", "epochs=3"],
                    num_samples=2, seed=7)
    assert len(trials) == 2 * 2 * 2
    assert all("epochs=3" in t for t in trials)
    lrs = [float(o.split("=")[1]) for t in trials for o in t if o.startswith("optim.lr=")]
    assert all(0.01 <= lr <= 0.1 for lr in lrs) and len(set(lrs)) == len(lrs)
    assert expand(["method=fgsm,pgd", "optim.lr=tag(log,interval(0.01,0.1))"], 2, seed=7) == \
        expand(["method=fgsm,pgd", "optim.lr=tag(log,interval(0.01,0.1))"], 2, seed=7)


def test_command_line_overrides_replace_the_preset(tmp_path):
    plan = SweepPlan.from_overrides(["sweep=smoke", "method=pgd", f"sweep.out={tmp_path}"])
    assert [t.method.name for t in plan.trials] == ["pgd"]
    assert all(t.out == str(tmp_path) and t.threads == 1 for t in plan.trials)


def test_fast_path_fields_are_trial_overrides(tmp_path):
    plan = SweepPlan.from_overrides(["sweep=smoke", "precision=bf16", "channels_last=true", "compile=default",
                                     f"sweep.out={tmp_path}"])
    assert all((t.precision, t.channels_last, t.compile) == ("bf16", True, "default") for t in plan.trials)


def test_bad_trial_in_a_sweep_names_trial_and_field_and_starts_nothing(tmp_path):
    out = tmp_path / "sweep"
    r = energy_at("sweep", "sweep=smoke", "attack.eps=0.1,-1", f"sweep.out={out}")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "trial 1" in line and "attack.eps=-1" in line and "attack.eps: must be a positive number" in line
    assert not out.exists()


@pytest.mark.parametrize("args, field", [
    (["sweep.scheduler=hyperband"], "sweep.scheduler"),
    (["sweep.stop_on=[co_energy,bogus]"], "sweep.stop_on"),
    (["cluster=kubernetes"], "cluster"),
    (["out=/tmp/x"], "out"),
])
def test_bad_sweep_settings(args, field):
    with pytest.raises(ConfigError) as e:
        SweepPlan.from_overrides(["sweep=smoke", *args])
    assert str(e.value).startswith(f"{field}:")


@pytest.mark.slow
def test_smoke_sweep_on_embedded_ray_writes_every_trials_logs_and_a_report(tmp_path):
    r = energy_at("sweep", "sweep=smoke", f"sweep.out={tmp_path}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = sorted(p.name.removeprefix("trial=") for p in (tmp_path / "trials").iterdir())
    assert len(trials) == 2 and {t.split("-")[0] for t in trials} == {"fgsm", "rs_fgsm"}
    batches = pl.read_parquet(tmp_path / "batches" / "*" / "*.parquet", hive_partitioning=True)
    for trial in trials:
        result = json.loads((tmp_path / "trials" / f"trial={trial}" / "result.json").read_text())
        steps = result["steps_done"]
        assert result["status"] in ("finished", "stopped") and steps > 0
        assert sorted(batches.filter(pl.col("trial") == trial)["step"].to_list()) == list(range(steps))
    assert (tmp_path / "tune" / tmp_path.name).is_dir()  # Tune's own state next to the telemetry
    assert f"tensorboard --logdir {tmp_path / 'tune'}\n" in r.stdout  # where Tune's logs stay, not its staging folder
    assert "To visualize your results with TensorBoard" not in r.stdout + r.stderr  # Tune's hint names the latter
    assert list((tmp_path / "tune" / tmp_path.name).glob("*/events.out.tfevents.*"))  # ... and they are there
    html = (tmp_path / "report.html").read_text()
    assert all(t in html for t in trials)
