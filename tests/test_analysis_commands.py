"""CLI functions (report, query, detect): exit codes, outputs, and the HTML report in Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread
from support.synth import synth_trial, write_sweep

from analysis import commands

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    trials, configs = {}, {}
    for seed in range(2):
        for eps, co in ((0.15, None), (0.25, 4 + seed)):
            t = f"eps{eps}-s{seed}"
            trials[t] = synth_trial(t, co_epoch=co, epochs=8, steps=30, n_probe=50, seed=seed)
            configs[t] = {"method.name": "fgsm", "attack.eps": eps, "optim.lr": 0.05, "seed": seed,
                          "epochs": 8, "data.name": "fashion_mnist"}
    return write_sweep(root, trials, configs)


def test_report_writes_html_pngs_and_prints_ranking(sweep: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r" / "report.html"
    assert commands.report([str(sweep), "--out", str(out), "--ranking", str(tmp_path / "rank.csv")]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out}" in stdout and "robust_final" in stdout and "0.25" in stdout
    page = out.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained
    assert "co_pgd_probe" in page and '<table class="ranking">' in page
    assert len(list((out.parent / "report_png").glob("*.png"))) == 4
    assert pl.read_csv(tmp_path / "rank.csv").height == 2
    # default location
    assert commands.report([str(sweep)]) == 0
    assert (sweep / "report.html").exists()


def test_detect_command(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.detect([str(sweep), "--format", "json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert {e["trial"] for e in events} == {"eps0.25-s0", "eps0.25-s1"}
    assert {"trial", "kind", "epoch", "step", "score", "evidence"} <= set(events[0])
    assert {(e["trial"], e["epoch"]) for e in events if e["kind"] == "co_pgd_probe"} == {
        ("eps0.25-s0", 4), ("eps0.25-s1", 5)}
    assert commands.detect([str(sweep)]) == 0
    assert "co_energy" in capsys.readouterr().out


def test_query_formats(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT trial, COUNT(*) AS n, MIN(de) AS min_de FROM batches GROUP BY trial ORDER BY trial"
    assert commands.query([str(sweep), sql]) == 0
    assert "eps0.15-s0" in capsys.readouterr().out
    assert commands.query([str(sweep), sql, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["n"] for r in rows] == [240] * 4
    assert commands.query([str(sweep), sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "trial,n,min_de"
    out = tmp_path / "q.parquet"
    assert commands.query([str(sweep), sql, "--format", "parquet", "--output", str(out)]) == 0
    assert pl.read_parquet(out).height == 4
    joined = ('SELECT t."attack.eps", AVG(e.acc_pgd) AS acc FROM epochs e JOIN trials t ON e.trial = t.trial '
              "WHERE e.split = 'val' GROUP BY t.\"attack.eps\" ORDER BY 1")
    assert commands.query([str(sweep), joined, "--format", "json"]) == 0
    assert [r["attack.eps"] for r in json.loads(capsys.readouterr().out)] == [0.15, 0.25]
    for table in ("events", "evals", "attack_energies"):  # every telemetry table, even before it has a file
        assert commands.query([str(sweep), f"SELECT COUNT(*) AS n FROM {table}", "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out) == [{"n": 0}]


def test_query_errors(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.query([str(sweep), "SELECT * FROM batchez"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown table 'batchez'" in err and "batches, epochs, probes, events, evals, attack_energies, trials" in err
    assert commands.query([str(sweep), "SELECT acc FROM epochs"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown column 'acc'" in err and "epochs columns:" in err and "acc_pgd" in err
    assert commands.query([str(sweep), "SELECT 1 FROM epochs", "--format", "parquet"]) == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "query", "detect"])
def test_missing_or_empty_sweep_dir(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = getattr(commands, command)
    extra = ["SELECT 1"] if command == "query" else []
    assert run([str(tmp_path / "nope"), *extra]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty" / "batches").mkdir(parents=True)
    assert run([str(tmp_path / "empty"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no telemetry tables" in err
    assert run([]) == 2  # argparse usage error
    assert run(["--help"]) == 0


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_report_renders_in_chromium(sweep: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium missing: apt-get install -y chromium")
    out = tmp_path / "report.html"
    assert commands.report([str(sweep), "--out", str(out)]) == 0

    # 1. every embedded image decodes: a probe script writes naturalWidth into the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load', () => {document.body.insertAdjacentHTML('beforeend',"
        " '<pre id=\"probe\">' + [...document.images].map(i => i.naturalWidth).join(',') + ';rows='"
        " + document.querySelectorAll('table.ranking tbody tr').length + '</pre>');});</script></body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), tmp=tmp_path).stdout
    found = re.search(r'<pre id="probe">([\d,]*);rows=(\d+)</pre>', dom)
    assert found, dom[-500:]
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) == 4 and all(w >= 600 for w in widths)
    assert int(found.group(2)) == 2

    # 2. the screenshot shows plots: plot-line colours and a large non-white area
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri(), tmp=tmp_path)
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (3000, 1200)

    def share(rgb: tuple[int, int, int], tol: int = 30) -> float:
        return float((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).mean())

    # (measured: rendered report ~0.90 white, ~4,800 colours; same page with broken
    # images ~0.97 white, ~470 colours, no plot-line colours)
    assert share((255, 255, 255), tol=5) < 0.95
    assert share((31, 119, 180)) > 1e-3  # matplotlib tab:blue lines
    assert share((255, 127, 14)) > 1e-3  # tab:orange lines
    assert share((0xE8, 0xEE, 0xF7), tol=3) > 1e-4  # ranking table header background
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 1500
