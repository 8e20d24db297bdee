"""One runner for every way a trial runs (orchestrator/runner.py): the same endings give the same
result.json status and the same exit rule in `energy-at train`, `train -m` and `sweep`.

Endings made on purpose, on tiny real trials: finished; diverged (lr 1e6: the loss overflows at once);
failed (the trial's checkpoint folder is a file, so the first checkpoint raises). A stopped trial
ends alike in `train` and `sweep`: tests/test_stopper.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import compose_trial
from workloads.config import trial_id
from workloads.run_dir import RunDir

pytestmark = pytest.mark.slow

TINY = ["method=fgsm", "epochs=1", "batch_size=64", "data.subset=256", "data.val_size=32", "data.probe_size=32",
        "data.test_size=32", "eval.pgd_steps=1", "stop_on=[]"]
ENDINGS = {"finished": ["optim.lr=0.05", "seed=0"], "diverged": ["optim.lr=1e6", "seed=0"],
           "failed": ["optim.lr=0.05", "seed=1"]}


def energy_at(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=600)


def ids(out: Path) -> dict[str, str]:
    return {ending: trial_id(compose_trial([*TINY, *o, f"out={out}"])) for ending, o in ENDINGS.items()}


def break_checkpoints(out: Path, trial: str) -> None:
    """The trial's checkpoint folder is a file: its first checkpoint raises (NotADirectoryError)."""
    path = RunDir(out).checkpoints(trial)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder")


def statuses(out: Path) -> dict[str, str]:
    return {ending: RunDir(out).read_result(tid)["status"] for ending, tid in ids(out).items()}


def test_each_ending_has_one_status_and_exit_rule_in_every_command(tmp_path) -> None:
    train = tmp_path / "train"
    break_checkpoints(train, ids(train)["failed"])
    codes = {ending: energy_at("train", *TINY, *o, f"out={train}").returncode for ending, o in ENDINGS.items()}
    assert statuses(train) == {e: e for e in ENDINGS}
    assert codes == {"finished": 0, "diverged": 0, "failed": 1}

    multi = tmp_path / "multirun"
    break_checkpoints(multi, ids(multi)["failed"])
    r = energy_at("train", "-m", *TINY, "optim.lr=0.05,1e6", "seed=0,1", f"out={multi}")
    assert statuses(multi) == {e: e for e in ENDINGS}
    assert r.returncode == 1 and f"did not succeed: {ids(multi)['failed']}" in r.stderr, r.stderr[-2000:]
    done = RunDir(multi).read_result(ids(multi)["finished"])  # its table row: best.pt's test, the last's PGD, val
    row = next(line.split() for line in (r.stdout + r.stderr).splitlines() if line.split()[:1] == [ids(multi)["finished"]])
    assert row[1:6] == ["finished", *(f"{done[k]:.3f}" for k in ("best_test_acc_nat", "best_test_acc_pgd",
                                                                  "test_acc_pgd", "best_val_acc_pgd"))], row

    sweep = tmp_path / "sweep"
    break_checkpoints(sweep, ids(sweep)["failed"])
    tiny = [o for o in TINY if not o.startswith("stop_on")]
    r = energy_at("sweep", "sweep=smoke", *tiny, "optim.lr=0.05,1e6", "seed=0,1", "sweep.stop_on=[]", "sweep.max_failures=0",
                  "sweep.report=false", f"sweep.out={sweep}")
    assert statuses(sweep) == {e: e for e in ENDINGS}
    assert r.returncode == 1 and f"did not succeed: {ids(sweep)['failed']}" in r.stderr, r.stderr[-2000:]
    for out in (train, multi, sweep):  # every ending leaves its result with the trial's progress
        failed = RunDir(out).read_result(ids(out)["failed"])
        assert failed["reason"].startswith(("NotADirectoryError", "FileExistsError")), failed


def test_result_json_has_one_schema_and_write_result_keeps_to_it(tmp_path) -> None:
    """Every writer (the trial, a failure, Tune's scheduler) goes through RunDir.write_result: a field
    outside run_dir.RESULT_FIELDS, a status outside STATUSES or another trial's id is refused."""
    from workloads.run_dir import RESULT_FIELDS

    run_dir = RunDir(tmp_path)
    run_dir.write_result("t", {"trial": "t", "status": "finished", "test_acc_pgd": 0.4})
    assert run_dir.read_result("t") == {"trial": "t", "status": "finished", "test_acc_pgd": 0.4}
    for bad in ({"trial": "t", "status": "done"}, {"trial": "t", "status": "finished", "accuracy": 1.0},
                {"trial": "u", "status": "running"}):
        with pytest.raises(ValueError, match="RESULT_FIELDS"):
            run_dir.write_result("t", bad)
    assert run_dir.read_result("t")["status"] == "finished"  # a refused write leaves the file as it was
    assert {"trial", "status", "reason", "best_test_acc_pgd"} <= set(RESULT_FIELDS)
