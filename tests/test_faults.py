"""Faults a user meets end in one line that names the file and what to do, and lose no logged row:
a disk that fills during a run (a real small tmpfs), and a truncated `last.pt`."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from analysis.read import SweepLogs

TINY = ["method=fgsm", "batch_size=64", "data.subset=512", "data.val_size=32", "data.probe_size=32",
        "data.test_size=32", "eval.pgd_steps=1", "stop_on=[]", "threads=1", "device=cpu"]


def train(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", *TINY, *args, f"out={out}"],
                          capture_output=True, text=True, timeout=600)


def steps_once(out: Path) -> list[int]:
    return SweepLogs(out).scan("batches").select("step").collect()["step"].sort().to_list()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_the_rerun_resumes_exactly_once(tmp_path) -> None:
    with small_filesystem(tmp_path / "small", "2500k") as out:  # the logs and best.pt fit, last.pt (3.4 MB) not
        r = train(out, "epochs=2")
        err = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(err) == 1, r.stderr[-3000:]
        assert err[0].startswith("energy-at train: error: no space left on the device writing ")
        assert "last.pt" in err[0] and "run the same command again" in err[0]
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        r = train(out, "epochs=2")
        assert r.returncode == 0, r.stderr[-3000:]
        assert steps_once(out) == list(range(16))  # 2 epochs x 8 batches, each step once


@pytest.mark.slow
def test_a_truncated_checkpoint_ends_in_one_line_and_deleting_it_restarts_cleanly(tmp_path) -> None:
    assert train(tmp_path, "epochs=1").returncode == 0
    (last,) = tmp_path.glob("checkpoints/*/last.pt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    r = train(tmp_path, "epochs=1")  # the same trial: it resumes from last.pt
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(err) == 1, r.stderr[-3000:]
    assert err[0].startswith(f"energy-at train: error: {last} is unreadable (")
    assert "resume=scratch to train the trial again" in err[0]
    last.unlink()
    r = train(tmp_path, "epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert steps_once(tmp_path) == list(range(8))


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["best", "scratch"])
def test_after_a_truncated_checkpoint_the_user_restarts_from_best_or_from_scratch(tmp_path, resume) -> None:
    """`resume=best` trains again from best.pt (the epochs after it, their log rows replaced); `resume=scratch`
    from the start; either way every step is logged once and the trial ends finished."""
    assert train(tmp_path, "epochs=3").returncode == 0
    (last,) = tmp_path.glob("checkpoints/*/last.pt")
    state = torch.load(last.parent / "best.pt", weights_only=True)
    best = 1  # as if the model after epoch 1 had been the best: 2 epochs to train again
    torch.save({"model": state["model"], "epoch": best}, last.parent / "best.pt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    err = train(tmp_path, "epochs=3").stderr.strip().splitlines()
    assert len(err) == 1 and "resume=best to restart from best.pt, or resume=scratch" in err[0], err
    r = train(tmp_path, "epochs=3", f"resume={resume}")
    assert r.returncode == 0, r.stderr[-3000:]
    start = best if resume == "best" else 0
    assert (f"resuming at epoch {start + 1}" in r.stdout) == (resume == "best"), r.stdout
    trained = [int(m[1]) for m in re.finditer(r"^trial \S+ epoch (\d+)/3 ", r.stdout, re.M)]
    assert trained == list(range(start + 1, 4))  # the epochs after the checkpoint it restarted from
    assert steps_once(tmp_path) == list(range(24))  # 3 epochs x 8 batches, each step once
    epochs = pl.read_parquet(tmp_path / "epochs" / "*" / "*.parquet")
    assert epochs.group_by("epoch", "split").len()["len"].max() == 1
    result = json.loads(next(tmp_path.glob("trials/*/result.json")).read_text())
    assert result["status"] == "finished" and result["epochs_done"] == 3
