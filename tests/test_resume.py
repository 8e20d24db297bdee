"""Kill -9 in the middle of an epoch, run the same command again: logs end exactly once, and equal an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

ARGS = ["method=rs_fgsm", "epochs=3", "batch_size=32", "data.subset=640", "data.val_size=64", "data.probe_size=32",
        "data.test_size=64", "eval.pgd_steps=2", "telemetry.flush_every=4", "attack.eps=0.1", "threads=1"]


def train(out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "train", *ARGS, f"out={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def table(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(out / name / "*" / "*.parquet", hive_partitioning=True)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_gives_exactly_once_logs(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = train(killed)
    ckpt = next_ckpt = None
    deadline = time.time() + 240
    # wait until epoch 0 is checkpointed and telemetry of epoch 1 has been flushed, then kill -9
    while time.time() < deadline:
        ckpts = list(killed.glob("checkpoints/*/last.pt"))
        if ckpts:
            ckpt = ckpts[0]
            parts = list(killed.glob("batches/*/part-*.parquet"))
            epoch0_parts = 20 // 4  # 640/32 = 20 steps per epoch, flushed every 4
            if len(parts) > epoch0_parts + 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the trial was not killed mid-run"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 20
    assert len(list(killed.glob("batches/*/part-*.parquet"))) > 6  # rows beyond the checkpoint exist

    resumed = train(killed)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming at epoch 2" in out  # 1 epoch done (1-based, as the epoch lines count)

    reference = train(clean)
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out

    batches = table(killed, "batches")
    assert batches["step"].sort().to_list() == list(range(60))  # no duplicated, no missing step
    epochs, probes = table(killed, "epochs"), table(killed, "probes")
    assert epochs.group_by("epoch", "split", "step").len()["len"].max() == 1  # probes the trigger ran: own steps
    assert epochs.filter(pl.col("train_loss").is_not_null()).group_by("epoch", "split").len().height == 6
    keys = ["epoch", "split", "step"]
    assert epochs.select(keys).sort(keys).equals(table(clean, "epochs").select(keys).sort(keys))
    assert probes.group_by("epoch").len().sort("epoch")["len"].to_list() == [32, 32, 32]
    # same RNG, data order and weights after the resume: the logs equal an uninterrupted run
    ref = table(clean, "batches").sort("step")
    for col in ("loss", "e_nat", "e_adv", "de"):
        assert (batches.sort("step")[col] - ref[col]).abs().max() < 1e-4, col
