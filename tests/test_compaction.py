"""Compaction keeps exactly-once: each checkpoint merges the parts the previous one committed into one
`part-<first>-<last>.parquet` and the newest merged files pairwise, as a binary counter; readers skip the parts a merged file covers (a crash between its rename and
the deletes leaves them), resume deletes them, and a kill -9 at any moment still ends exactly once."""
from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from analysis.read import SweepLogs
from orchestrator.config import compose_trial
from orchestrator.stopper import EnergyStop, first_event
from workloads.telemetry.writer import PartWriter, part_range
from workloads.trial import Trial

EPOCHS, FLUSH = 3, 4
ARGS = ["method=fgsm", f"epochs={EPOCHS}", "batch_size=32", "data.subset=512", "data.val_size=64",
        "data.probe_size=32", "data.test_size=64", "eval.pgd_steps=2", f"telemetry.flush_every={FLUSH}",
        "attack.eps=0.1", "threads=1", "device=cpu"]
TABLES = ("batches", "epochs", "probes")


def make_trial(out: Path) -> Trial:
    return Trial(compose_trial([*ARGS, f"out={out}"]))


def assert_exactly_once(out: Path, trial: Trial, epochs: int = EPOCHS, on_disk: bool = True) -> None:
    """Every step, epoch row and probe row once through SweepLogs (and every file, if `on_disk`)."""
    steps = list(range(trial.steps_per_epoch * epochs))
    logs = SweepLogs(out, warn=False)
    frames = {t: logs.scan(t).collect() for t in TABLES}
    if on_disk:
        frames |= {f"{t} (pandas)": pl.from_pandas(pd.read_parquet(out / t)) for t in TABLES}
    for name, frame in frames.items():
        if name.startswith("batches"):
            assert sorted(frame["step"].to_list()) == steps, name
        elif name.startswith("epochs"):
            assert sorted(frame.select("epoch", "split").rows()) == [(e, s) for e in range(epochs)
                                                                      for s in ("probe", "val")], name
        else:
            assert frame.group_by("epoch").len().sort("epoch")["len"].to_list() == [32] * epochs, name


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Trial]:
    out = tmp_path_factory.mktemp("compaction")
    trial = make_trial(out)
    assert trial.run()["status"] == "finished"
    return out, trial


def binary_files(epochs: int, per_epoch: int) -> list[str]:
    """The files a finished trial of `epochs` x `per_epoch` parts holds: one per 1-bit of `epochs`, largest first."""
    names, first = [], 0
    for bit in reversed(range(epochs.bit_length())):
        if epochs >> bit & 1:
            span = (1 << bit) * per_epoch
            names.append(f"part-{first:06d}-{first + span - 1:06d}.parquet" if span > 1 else f"part-{first:06d}.parquet")
            first += span
    return names


def test_a_finished_trial_holds_about_log2_epochs_files_a_table(finished) -> None:
    out, trial = finished
    per_epoch = math.ceil(trial.steps_per_epoch / FLUSH)
    assert per_epoch >= 3  # several parts an epoch: there is something to merge
    names = sorted(p.name for p in (out / "batches" / trial.id).iterdir())
    assert names == binary_files(EPOCHS, per_epoch)  # 3 epochs: epochs 0-1 in one file, epoch 2 in another
    for table in TABLES:
        assert len(list((out / table / trial.id).iterdir())) == EPOCHS.bit_count(), table
    assert_exactly_once(out, trial)


def test_many_epochs_of_parts_stay_a_few_files_each_row_once(tmp_path) -> None:
    """37 epochs x 3 parts, compacted one epoch behind then once at the end as a trial does: 3 files
    (37 = 32 + 4 + 1), and every row once through SweepLogs and through pandas (which reads every file)."""
    writer, committed, epochs, per_epoch, n = PartWriter(tmp_path, "batches", "t", seq=0), 0, 37, 3, 5
    for epoch in range(epochs):
        for _ in range(per_epoch):
            step = writer.seq * n
            writer.write({"trial": ["t"] * n, "epoch": [epoch] * n, "step": list(range(step, step + n))})
        writer.compact(committed)
        committed = writer.seq
        files = sorted(p.name for p in (tmp_path / "batches" / "t").iterdir())
        assert len(files) <= (epoch + 1).bit_length() + per_epoch, (epoch, files)
    writer.compact(committed)
    files = sorted(p.name for p in (tmp_path / "batches" / "t").iterdir())
    assert files == binary_files(epochs, per_epoch)
    want = list(range(epochs * per_epoch * n))
    assert SweepLogs(tmp_path, warn=False).scan("batches").collect()["step"].to_list() == want  # in order
    assert sorted(pd.read_parquet(tmp_path / "batches")["step"]) == want


def test_parts_a_crash_left_beside_their_merged_file_are_skipped_then_deleted_on_resume(finished, tmp_path) -> None:
    out, trial = tmp_path / "out", finished[1]
    shutil.copytree(finished[0], out)
    folder = out / "batches" / trial.id
    merged = sorted(p for p in folder.iterdir() if (r := part_range(p.name)) and r[0] < r[1])[-1]
    first, last = part_range(merged.name)
    rows = pq.read_table(merged)
    size = math.ceil(rows.num_rows / (last - first + 1))
    for i, seq in enumerate(range(first, last + 1)):  # the deleted parts are back, as if the deletes never ran
        pq.write_table(rows.slice(i * size, size), folder / f"part-{seq:06d}.parquet")
    assert_exactly_once(out, trial, on_disk=False)  # pandas reads every file: duplicates until the resume
    assert len(pd.read_parquet(out / "batches")) > rows.num_rows * EPOCHS / (EPOCHS - 1)
    make_trial(out)  # resume: truncate deletes the leftovers
    assert_exactly_once(out, trial)


def test_a_crash_during_a_merge_reads_once_and_resumes_to_exactly_once(tmp_path, monkeypatch) -> None:
    compact = PartWriter.compact

    def crash_after_the_rename(self, upto):
        with monkeypatch.context() as m:
            def boom(path, missing_ok=False):
                raise RuntimeError(f"killed before deleting {path.name}")
            m.setattr(Path, "unlink", boom)
            return compact(self, upto)

    monkeypatch.setattr(PartWriter, "compact", crash_after_the_rename)
    trial = make_trial(tmp_path)
    with pytest.raises(RuntimeError, match="killed before deleting"):
        trial.run()
    monkeypatch.undo()
    folder = tmp_path / "batches" / trial.id
    names = sorted(p.name for p in folder.iterdir())
    assert any("-" in n.removeprefix("part-") for n in names) and "part-000000.parquet" in names  # both there
    logs = SweepLogs(tmp_path, warn=False)
    steps = logs.scan("batches").collect()["step"].to_list()
    assert sorted(steps) == list(range(2 * trial.steps_per_epoch))  # epoch 0 merged, epoch 1 in parts: once
    resumed = make_trial(tmp_path)
    assert resumed.resumed and resumed.epoch == 1
    assert sorted(pd.read_parquet(tmp_path / "batches")["step"]) == list(range(trial.steps_per_epoch))
    assert resumed.run()["status"] == "finished"
    assert_exactly_once(tmp_path, resumed)


def test_sigkill_at_a_random_moment_then_rerun_ends_exactly_once(tmp_path) -> None:
    def train() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "train", *ARGS, f"out={tmp_path}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    seed = int(os.environ.get("COMPACTION_SEED", random.randrange(1 << 30)))
    print(f"COMPACTION_SEED={seed}")  # shown on a failure: rerun with it to kill at the same moments
    rng = random.Random(seed)
    for _ in range(2):  # twice: a kill may come at the start, mid-epoch, in an evaluation or a merge
        proc = train()
        deadline = time.time() + 240
        while not list(tmp_path.glob("batches/*/*.parquet")) and proc.poll() is None:
            assert time.time() < deadline, "no telemetry in time"
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proc = train()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert_exactly_once(tmp_path, make_trial(tmp_path))


def test_the_incremental_stop_rule_reads_a_merged_file_as_the_parts_it_replaced(finished, tmp_path) -> None:
    """EnergyStop read the parts; the next epoch merges them: it gets no new rows from the merged file,
    and when parts it read vanish without one (a resume truncated them) it reads the table again."""
    source, trial = finished
    stop_on = ("co_energy", "co_pgd_probe", "ro", "nan")
    src = {t: sorted((source / t / trial.id).iterdir()) for t in TABLES}
    rows = {t: pl.concat([pl.read_parquet(p) for p in files]) for t, files in src.items()}
    incremental = EnergyStop(tmp_path, trial.id, stop_on)
    writers = {t: PartWriter(tmp_path, t, trial.id, 0) for t in TABLES}
    for epoch in range(EPOCHS):
        for t, w in writers.items():  # this epoch's rows, as parts of FLUSH rows (one per epoch for probes)
            mine = rows[t].filter(pl.col("epoch") == epoch)
            size = FLUSH if t == "batches" else len(mine)
            for i in range(0, len(mine), size):
                w.write(mine.slice(i, size).to_arrow().to_pydict())
        if epoch:
            for w in writers.values():  # what the trial does before checkpoint `epoch`
                w.compact(committed[w.table])
        committed = {t: w.seq for t, w in writers.items()}
        mine, fresh = incremental({"epoch": epoch}), first_event(tmp_path, trial.id, epoch, stop_on)
        assert mine == fresh, (epoch, mine, fresh)
        for t in incremental.tables:
            assert incremental._rows[t].height == rows[t].filter(pl.col("epoch") <= epoch).height, (epoch, t)
            assert incremental._logs.dropped[t] == []
    assert any("-" in p.name.removeprefix("part-") for p in (tmp_path / "batches" / trial.id).iterdir())
    writers["batches"].seq = committed["batches"] - 1  # a resume that drops the last part
    writers["batches"].truncate()
    incremental({"epoch": EPOCHS - 1})
    assert incremental._logs.dropped["batches"]
    assert incremental._rows["batches"].height == rows["batches"].height - (trial.steps_per_epoch % FLUSH or FLUSH)
