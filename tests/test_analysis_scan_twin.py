"""The scan benchmark's pandas twin computes the same events and ranking as analysis.detect and rank, so its
speed-up compares like with like (benchmarks/analysis_scan.py; a twin that drifted from the detectors went
unnoticed once). A small generated sweep of the real schema, with CO, RO and NaN trials."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import analysis_scan  # noqa: E402


def test_the_pandas_twin_finds_the_detectors_events(tmp_path, capsys) -> None:
    rc = analysis_scan.main(["--data", str(tmp_path), "--trials", "20", "--epochs", "100", "--steps", "5"])
    out = capsys.readouterr().out
    assert "same events: True; same ranking: True" in out and rc == 0, out
    kinds = out.split(" events: ")[1].splitlines()[0]
    assert all(f"'{k}'" in kinds for k in ("co_energy", "co_pgd_probe", "ro", "nan")), kinds  # every detector compared
