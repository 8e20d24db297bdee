"""Faults a user meets end in one line that names the file and what to do, and lose no logged row:
a disk that fills during a run (a real small tmpfs), and a truncated `last.pt`."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "delete it to train the trial again from scratch" in err[0]
    last.unlink()
    r = train(tmp_path, "epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert steps_once(tmp_path) == list(range(8))
