"""`energy-at status` tells the truth about live trials: a real `energy-at train` killed with SIGKILL
is `interrupted` (not `running`), a running one shows its epoch, a finished one `finished n/n`;
`--watch` refreshes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator import status as status_module
from orchestrator.cli import main
from workloads.run_dir import RunDir

TINY = ["data.subset=256", "batch_size=64", "data.val_size=64", "data.probe_size=32", "data.test_size=64",
        "eval.pgd_steps=2", "threads=1", "device=cpu"]


def train(out: Path, epochs: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "orchestrator.cli", "train", *TINY, f"epochs={epochs}", f"out={out}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def status_json(capsys, out: Path) -> dict:
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def status_text(capsys, out: Path) -> str:
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    return capsys.readouterr().out


def test_sigkilled_trial_is_interrupted_and_a_running_one_shows_its_epoch(capsys, tmp_path):
    out = tmp_path / "killed"
    proc = train(out, epochs=40)  # killed after its first epochs: never runs them all
    try:
        deadline = time.time() + 240
        while not list(out.glob("epochs/*/part-*.parquet")):  # epoch 0 evaluated and logged
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no epoch logged in time"
            time.sleep(0.05)
        (row,) = status_json(capsys, out)["trials"]
        assert row["status"] == "running", row
        assert 1 <= row["epochs_done"] < 40 and row["epochs"] == 40
        assert row["epoch"] == row["epochs_done"] + 1 and f"in epoch {row['epoch']}/40" in row["reason"]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert RunDir(out).read_result(row["trial"])["status"] == "running"  # what the trial itself left behind
    (row,) = status_json(capsys, out)["trials"]
    assert row["status"] == "interrupted", row
    assert 1 <= row["epochs_done"] < 40 and f"pid {proc.pid}" in row["reason"]
    text = status_text(capsys, out)
    assert "1 interrupted" in text and "running" not in text


def test_finished_trial_shows_finished_n_of_n(capsys, tmp_path):
    out = tmp_path / "done"
    proc = train(out, epochs=3)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    (row,) = status_json(capsys, out)["trials"]
    assert row["status"] == "finished" and row["epochs_done"] == row["epochs"] == 3, row
    line = next(ln for ln in status_text(capsys, out).splitlines() if ln.startswith(row["trial"]))
    assert line.split()[1:3] == ["finished", "3/3"], line


def _running_trial(d: Path, trial: str = "fgsm-s0-abc") -> str:
    """A trial of a local sweep as its Ray worker leaves it: result.json `running`, no lock of its own."""
    run_dir = RunDir(d)
    run_dir.write_config(trial, {"trial_id": trial, "epochs": 5})
    run_dir.write_result(trial, {"trial": trial, "status": "running", "reason": None, "epochs_done": 0})
    return trial


def test_trial_of_a_local_sweep_is_interrupted_once_its_driver_is_gone(capsys, tmp_path):
    d = tmp_path / "sweep"
    trial = _running_trial(d)
    code = ("import sys, time; from workloads.run_dir import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(600)")
    driver = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert driver.stdout.readline().strip() == "locked"
        assert status_json(capsys, d)["trials"][0]["status"] == "running"  # the sweep driver holds its lock
    finally:
        driver.kill()
        driver.wait()
    (row,) = status_json(capsys, d)["trials"]
    assert row["trial"] == trial and row["status"] == "interrupted" and f"pid {driver.pid}" in row["reason"]


def test_no_lock_at_all_trusts_the_result(capsys, tmp_path):
    """Nothing to tell from (e.g. a trial written by an older version): result.json's word stands."""
    d = tmp_path / "sweep"
    _running_trial(d)
    assert status_json(capsys, d)["trials"][0]["status"] == "running"


def test_watch_refreshes_until_its_limit(capsys, tmp_path):
    d = tmp_path / "sweep"
    _running_trial(d)
    slept: list[float] = []
    capsys.readouterr()
    assert status_module.status([str(d), "--watch", "0.5"], max_refreshes=3, sleep=slept.append) == 0
    text = capsys.readouterr().out
    assert text.count("every 0.5s: energy-at status") == 3 and text.count("1 trials (1 running)") == 3
    assert slept == [0.5, 0.5]
    assert status_module.status(["--watch", str(d), "--json"], max_refreshes=2, sleep=slept.append) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(ln)["counts"] == {"running": 1} for ln in lines)
    assert slept[-1] == 2.0  # the default period

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    assert status_module.status([str(d), "--watch"], sleep=interrupt) == 0  # Ctrl-C ends it cleanly
    assert main(["status", str(d), "--watch", "0"]) == 2


TUNE_RUN = """
import sys
from ray import tune
def trainable(config):
    tune.report({"score": config["x"]})
tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2])},
           run_config=tune.RunConfig(name="exp", storage_path=sys.argv[1])).fit()
"""


def test_status_of_trials_tune_has_no_metrics_for_prints_no_tune_warning(tmp_path, capfd):
    """A real Tune experiment whose second trial has no results yet, as a pending trial of a live sweep:
    Tune's ExperimentAnalysis warns for each such trial; `energy-at status` must not pass that on."""
    tune_dir = RunDir(tmp_path).tune()
    subprocess.run([sys.executable, "-c", TUNE_RUN, str(tune_dir)], check=True, capture_output=True, timeout=300)
    trial_dirs = sorted(d for d in (tune_dir / "exp").iterdir() if d.is_dir())
    assert len(trial_dirs) == 2
    for name in ("result.json", "progress.csv"):
        (trial_dirs[1] / name).unlink()
    capfd.readouterr()
    trials = status_module.tune_trials(tmp_path)
    err = capfd.readouterr().err
    assert len(trials) == 2 and {t["tune"] for t in trials.values()} == {"TERMINATED"}
    assert "Failed to fetch metrics" not in err, err
