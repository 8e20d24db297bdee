"""Reading sweeps: both folder layouts, schema evolution, corrupt and hidden files, other readers."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from support.synth import synth_trial, write_sweep

from analysis.read import SweepLogs, SweepError, polars_schema
from workloads.telemetry.schema import TABLES, arrow_schema


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    trials = {t: synth_trial(t, epochs=4, steps=10, n_probe=20, seed=i) for i, t in enumerate(["0001", "b"])}
    return write_sweep(tmp_path / "sweep", trials)


def test_scan_reads_all_tables_with_schema(sweep_dir: Path) -> None:
    sweep = SweepLogs(sweep_dir)
    assert sweep.tables() == ["batches", "epochs", "probes"]
    for table in TABLES:
        frame = sweep.scan(table).collect()
        assert frame.schema == polars_schema(table)
    batches = sweep.scan("batches").collect()
    assert batches.height == 2 * 40
    # numeric-looking trial ids stay strings, rows come back in (trial, step) order
    assert batches["trial"].unique(maintain_order=True).to_list() == ["0001", "b"]
    assert batches.filter(pl.col("trial") == "0001")["step"].to_list() == list(range(40))
    assert sweep.skipped == []


def test_several_sweep_dirs(tmp_path: Path) -> None:
    a = write_sweep(tmp_path / "a", {"x": synth_trial("x", epochs=2, steps=5)})
    b = write_sweep(tmp_path / "b", {"y": synth_trial("y", epochs=3, steps=5)})
    sweep = SweepLogs([a, b])
    counts = sweep.scan("batches").group_by("trial").len().sort("trial").collect()
    assert counts.rows() == [("x", 10), ("y", 15)]
    assert sweep.trials()["sweep"].to_list() == [str(a), str(b)]


def test_missing_column_reads_as_null_and_extra_column_is_ignored(sweep_dir: Path) -> None:
    old = synth_trial("old", epochs=2, steps=5)["batches"].drop_columns(["de_std", "aae_frac"])
    newer = synth_trial("new", epochs=2, steps=5)["batches"]
    newer = newer.append_column("future_col", pa.array([1.0] * newer.num_rows))
    for table in (old, newer):
        d = sweep_dir / "batches" / f"trial={table['trial'][0]}"
        d.mkdir(parents=True)
        pq.write_table(table, d / "part-000000.parquet")
    frame = SweepLogs(sweep_dir).scan("batches").collect()
    assert "future_col" not in frame.columns
    old_rows = frame.filter(pl.col("trial") == "old")
    assert old_rows.height == 10
    assert old_rows["de_std"].null_count() == 10
    assert old_rows["de"].null_count() == 0
    assert frame.filter(pl.col("trial") == "new")["de_std"].null_count() == 0


def test_wider_float_and_narrow_int_columns_are_cast(sweep_dir: Path) -> None:
    t = synth_trial("f64", epochs=1, steps=5)["batches"]
    t = t.set_column(t.schema.get_field_index("de"), "de", t["de"].cast(pa.float64()))
    t = t.set_column(t.schema.get_field_index("step"), "step", t["step"].cast(pa.int32()))
    d = sweep_dir / "batches" / "trial=f64"
    d.mkdir(parents=True)
    pq.write_table(t, d / "part-000000.parquet")
    sweep = SweepLogs(sweep_dir)
    frame = sweep.scan("batches").filter(pl.col("trial") == "f64").collect()
    assert frame.schema["de"] == pl.Float32 and frame.height == 5
    assert sweep.skipped == []


def test_corrupt_truncated_and_mistyped_files_are_skipped_and_reported(
    sweep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = sweep_dir / "batches" / "b" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:200])  # truncated mid-file: no footer
    garbage = sweep_dir / "epochs" / "b" / "part-000009.parquet"
    garbage.write_bytes(b"PAR1 not really parquet")
    bad_type = synth_trial("c", epochs=1, steps=4)["batches"]
    bad_type = bad_type.set_column(2, "method", pa.array([1.5] * 4))  # method as double
    (sweep_dir / "batches" / "trial=c").mkdir()
    pq.write_table(bad_type, sweep_dir / "batches" / "trial=c" / "part-000000.parquet")

    sweep = SweepLogs(sweep_dir)
    batches = sweep.scan("batches").collect()
    epochs = sweep.scan("epochs").collect()
    skipped = {path: why for path, why in sweep.skipped}
    assert set(skipped) == {part, garbage, sweep_dir / "batches" / "trial=c" / "part-000000.parquet"}
    assert "footer" in skipped[part] and "method" in skipped[sweep_dir / "batches" / "trial=c" / "part-000000.parquet"]
    err = capsys.readouterr().err
    assert str(part) in err and str(garbage) in err
    # everything else is still read
    assert batches.filter(pl.col("trial") == "0001").height == 40
    assert 0 < batches.filter(pl.col("trial") == "b").height < 40
    assert epochs.height == 16


def test_reading_one_trial_lists_only_its_partition(sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = sweep_dir / "batches" / "0001" / "part-000000.parquet"
    other.write_bytes(b"PAR1 corrupt")  # another trial's file is neither opened nor reported
    sweep = SweepLogs(sweep_dir, trials=["b"])
    assert {p.parent.name for p in sweep.files("batches")} == {"b"}
    assert sweep.scan("batches").collect()["trial"].unique().to_list() == ["b"]
    assert not sweep.skipped and not capsys.readouterr().err


def test_hidden_temp_files_are_ignored(sweep_dir: Path) -> None:
    d = sweep_dir / "batches" / "b"
    junk = synth_trial("b", epochs=1, steps=3)["batches"]
    pq.write_table(junk, d / ".part-000003.parquet")  # valid parquet, but hidden
    (d / ".part-000004.parquet.tmp").write_bytes(b"half written")
    (d / "_part-000005.parquet").write_bytes(b"junk")
    hidden_trial = sweep_dir / "batches" / ".z"
    hidden_trial.mkdir()
    pq.write_table(junk, hidden_trial / "part-000000.parquet")
    sweep = SweepLogs(sweep_dir)
    assert sweep.scan("batches").collect().height == 80
    assert sweep.skipped == []


def test_other_readers_read_the_same_files(sweep_dir: Path) -> None:
    expected = SweepLogs(sweep_dir).scan("batches").select("trial", "step", "de").collect()
    glob = str(sweep_dir / "batches" / "*" / "*.parquet")
    con = duckdb.connect()
    rows = con.execute(
        f"select trial, count(*), sum(step), sum(de) from read_parquet('{glob}') group by trial order by trial"
    ).fetchall()
    want = expected.group_by("trial").agg(pl.len(), pl.col("step").sum(), pl.col("de").sum()).sort("trial")
    assert [r[:3] for r in rows] == [r[:3] for r in want.rows()]
    assert [r[3] for r in rows] == pytest.approx(want["de"].to_list(), rel=1e-5)
    frame = pd.read_parquet(sweep_dir / "batches")  # no options: `trial` is a string column of the files
    assert len(frame) == 80 and set(frame["trial"]) == {"0001", "b"}
    table = ds.dataset(sweep_dir / "epochs", format="parquet").to_table()
    assert table.num_rows == 16
    assert pq.read_table(sweep_dir / "probes" / "b" / "part-000000.parquet").schema == arrow_schema("probes")


def test_trials_frame(tmp_path: Path) -> None:
    trials = {t: synth_trial(t, epochs=1, steps=3) for t in ("a", "b", "c")}
    configs = {
        "a": {"method.name": "fgsm", "attack.eps": 0.25, "optim.lr": 0.05, "seed": 0, "epochs": 5},
        "b": {"method.name": "pgd", "attack.eps": 1, "optim.lr": 0.05, "seed": 1, "epochs": 5, "tags": ["x"]},
        "c": {"method.name": "fgsm", "attack.eps": 0.25, "seed": 2, "epochs": 5},
    }
    results = {"a": {"status": "finished", "reason": None, "epochs_done": 5},
               "b": {"status": "diverged", "reason": "nan loss", "epochs_done": 2}}
    root = write_sweep(tmp_path, trials, configs, results)
    (root / "trials" / "trial=c" / "result.json").unlink()  # still running
    frame = SweepLogs(root).trials()
    assert frame["trial"].to_list() == ["a", "b", "c"]
    assert frame["status"].to_list() == ["finished", "diverged", None]
    assert frame["epochs_done"].to_list() == [5, 2, None]
    assert frame.schema["attack.eps"] == pl.Float64 and frame["attack.eps"].to_list() == [0.25, 1.0, 0.25]
    assert frame["optim.lr"].to_list() == [0.05, 0.05, None]
    assert frame["tags"].to_list() == [None, json.dumps(["x"]), None]
    assert frame["trial_id"].to_list() == ["a", "b", "c"]
    assert frame["data.label_noise"].to_list() == [0.0, 0.0, 0.0]  # added later: older configs read its default


def test_a_field_added_later_keeps_older_and_newer_trials_in_one_ranking_group(tmp_path: Path) -> None:
    from analysis.rank import rank, trial_metrics

    trials = {t: synth_trial(t, epochs=1, steps=3) for t in ("old", "new")}
    base = {"method.name": "fgsm", "attack.eps": 0.25, "seed": 0, "epochs": 1}
    configs = {"old": base, "new": base | {"seed": 1, "data.label_noise": 0.0}}
    results = {t: {"status": "finished", "reason": None, "epochs_done": 1} for t in trials}
    root = write_sweep(tmp_path, trials, configs, results)
    logs = SweepLogs(root)
    assert rank(trial_metrics(logs.scan("epochs")), logs.trials())["n"].to_list() == [2]


def test_missing_or_empty_sweep_dir(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="not found"):
        SweepLogs(tmp_path / "nope")
    (tmp_path / "batches").mkdir()
    with pytest.raises(SweepError, match="no telemetry tables"):
        SweepLogs(tmp_path).require_tables()
    assert SweepLogs(tmp_path).scan("batches").collect().schema == polars_schema("batches")
