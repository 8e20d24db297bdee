"""Every Parquet reader reads a sweep's tables as they are: pandas, pyarrow, duckdb and polars, no options.

One real trial (Fashion-MNIST, a few seconds) writes the tables; each reader opens a table
folder the way its documentation's first example does and gets `trial` as a plain string
column with every row. A copy in the layout of earlier versions (`<table>/trial=<id>/`) still
reads through `SweepLogs`, row for row the same.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from analysis.read import SweepLogs
from orchestrator.config import compose_trial
from workloads.trial import Trial

TINY = ["method=fgsm", "epochs=3", "batch_size=64", "data.subset=256", "data.val_size=64", "data.probe_size=32",
        "data.test_size=64", "eval.pgd_steps=2", "threads=1", "device=cpu", "telemetry.flush_every=2"]
TABLES = ("batches", "epochs", "probes")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("readers")
    trial = Trial(compose_trial([*TINY, f"out={out}"]))
    assert trial.run()["status"] == "finished"
    assert len(list((out / "batches" / trial.id).glob("part-*.parquet"))) == 2  # 3 epochs: two files (2 + 1)
    return out, trial.id


def expected(out: Path, table: str) -> int:
    return SweepLogs(out).scan(table).select(pl.len()).collect().item()


@pytest.mark.parametrize("table", TABLES)
def test_pandas_pyarrow_duckdb_polars_read_a_table_folder(sweep, table: str) -> None:
    out, tid = sweep
    folder, n = out / table, expected(out, table)
    frame = pd.read_parquet(folder)
    assert len(frame) == n and set(frame["trial"]) == {tid}
    assert pd.api.types.is_string_dtype(frame["trial"]) and not isinstance(frame["trial"].dtype, pd.CategoricalDtype)
    for arrow in (pq.read_table(folder), ds.dataset(folder).to_table()):
        assert arrow.num_rows == n and arrow.schema.field("trial").type == pa.string()
    rows = duckdb.sql(f"SELECT trial, count(*) FROM read_parquet('{folder}/*/*.parquet') GROUP BY trial").fetchall()
    assert rows == [(tid, n)]
    lazy = pl.scan_parquet(folder).collect()
    assert lazy.height == n and lazy.schema["trial"] == pl.String


def earlier_layout_copy(out: Path, tid: str, dest: Path) -> Path:
    """A copy of the sweep with each table's folder named `trial=<id>`, as earlier versions wrote it."""
    shutil.copytree(out, dest)
    for table in TABLES:
        (dest / table / tid).rename(dest / table / f"trial={tid}")
    return dest


def test_a_sweep_in_the_earlier_layout_reads_the_same(sweep, tmp_path: Path) -> None:
    out, tid = sweep
    legacy = earlier_layout_copy(out, tid, tmp_path / "legacy")
    new, old = SweepLogs(out), SweepLogs(legacy)
    assert old.trial_ids("batches") == [tid]
    for table in TABLES:
        assert old.scan(table).collect().equals(new.scan(table).collect()), table
    only = SweepLogs(legacy, trials=[tid]).scan("epochs").collect()  # the stopper's one-trial read
    assert only.height == expected(out, "epochs")


def test_a_resumed_earlier_layout_trial_keeps_writing_its_own_folder(sweep, tmp_path: Path) -> None:
    out, tid = sweep
    legacy = earlier_layout_copy(out, tid, tmp_path / "legacy")
    summary = Trial(compose_trial([*TINY, "epochs=3", f"out={legacy}", f"trial_id={tid}"])).run()
    assert summary["status"] == "finished" and summary["epochs_done"] == 3
    assert not (legacy / "batches" / tid).exists()  # one folder per trial, the one it had
    steps = SweepLogs(legacy).scan("batches").collect()["step"]
    assert steps.to_list() == list(range(summary["steps_done"]))  # exactly once across the resume
