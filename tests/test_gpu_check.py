"""benchmarks/gpu_check.sh in its CPU mode: every step runs for real (tiny sizes) and every figure is a number."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import expected  # noqa: E402


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_reports_every_figure(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", str(out)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "GPU_CHECK_WORK": str(work), "PY": sys.executable})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu" and summary["missing"] == [] and summary["host_syncs_found"] == []
    assert set(summary["steps"]) >= {"info", "data", "telemetry", "sweep", "energy", "throughput"}
    assert all(summary["steps"][s] == "0" for s in ("info", "data", "telemetry", "sweep", "energy", "throughput"))
    figures, skipped = summary["figures"], summary["skipped"]
    for key, why in expected(cpu=True).items():
        if why is None:
            assert isinstance(figures[key], (int, float)) and figures[key] == figures[key], key  # a number, not NaN
        else:  # CUDA-only (graphs, host syncs): null, and the summary says why
            assert figures[key] is None and skipped[key] == why, key
    assert figures["energy_within_tolerance"] == 1 and figures["report_written"] == 1
    assert figures["packing_gain"] > 0 and figures["train_b16_pgd10_fast_img_s"] > 0
    assert "CUDA sync debug mode not checked" in (out / "summary.md").read_text()
