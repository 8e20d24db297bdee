"""The synthetic telemetry generator of tests/support/synth.py matches the schema."""
from __future__ import annotations

from pathlib import Path

from support.synth import synth_trial, write_sweep

from workloads.telemetry.schema import arrow_schema


def test_synth_tables_match_schema(tmp_path: Path) -> None:
    tables = synth_trial("t0", co_epoch=5)
    for name, table in tables.items():
        assert table.schema == arrow_schema(name)
    write_sweep(tmp_path, {"t0": tables})
    assert len(list((tmp_path / "batches" / "t0").glob("part-*.parquet"))) == 3
