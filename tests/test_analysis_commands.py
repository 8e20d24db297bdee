"""CLI functions (report, query, detect): exit codes, outputs, and the HTML report in Chromium."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest
from matplotlib.image import imread
from plotly.offline import get_plotlyjs
from support.browser import CHROMIUM, probe, render, screenshot
from support.synth import MANY_EPS, MANY_METHODS, many_trials_sweep, synth_trial, write_sweep

from analysis import commands
from analysis.read import SweepLogs
from analysis.report import Report, build, epoch_ticks

PLOTLY_JS_HEAD = get_plotlyjs()[:120]  # the bundled plotly.js's licence banner and first lines


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


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag of `page` (script bodies are not parsed as HTML)."""
    tags: list[tuple[str, dict[str, str | None]]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, dict(attrs)))

    Parser().feed(page)
    return tags


def _assert_self_contained(page: str) -> None:
    """plotly.js inlined exactly once; nothing loaded from elsewhere (no src/href but data: and #anchors)."""
    assert page.count(PLOTLY_JS_HEAD) == 1
    tags = _tags(page)
    assert not [t for t, a in tags if t in ("link", "iframe", "object", "embed")]
    refs = [a.get(k) for t, a in tags for k in ("src", "href") if a.get(k) is not None]
    assert all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"<script[^>]*\ssrc=", page)


def test_report_writes_one_html_and_prints_ranking(sweep: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r" / "report.html"
    assert commands.report([str(sweep), "--out", str(out), "--ranking", str(tmp_path / "rank.csv")]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out}" in stdout and "robust" in stdout and "clean" in stdout and "0.25" in stdout
    page = out.read_text()
    _assert_self_contained(page)
    divs = [a["id"] for t, a in _tags(page) if t == "div" and "plotly-graph-div" in (a.get("class") or "")]
    trials = sorted(p.name.removeprefix("trial=") for p in (sweep / "trials").iterdir())
    # the overview, then a detail figure for each trial (4 trials: all among the top 5)
    assert divs[:3] == ["overview-acc", "overview-de", "overview-results"]
    assert sorted(divs[3:]) == sorted(f"trial-{t}-plot" for t in trials)
    assert "co_pgd_probe" in page and '<table class="ranking sortable">' in page
    (trials_table,) = re.findall(r'<table class="trials sortable">.*?</table>', page, re.S)
    assert trials_table.count("<tr>") == 1 + 4 and all(f'href="#trial-{t}"' in trials_table for t in trials)
    assert not (out.parent / "report_png").exists()  # everything is in the one file
    assert pl.read_csv(tmp_path / "rank.csv").height == 2
    # default location
    assert commands.report([str(sweep)]) == 0
    assert (sweep / "report.html").exists()


def test_report_figures_are_valid_plotly(sweep: Path, tmp_path: Path) -> None:
    result = build(SweepLogs(sweep), tmp_path / "report.html")
    for div, fig in result.figures.items():
        go.Figure(fig)  # raises on any property plotly does not know
    acc = result.figures["overview-acc"]["data"]
    headers = [t["name"] for t in acc if t.get("showlegend") and t["legendgroup"] != "_events"]
    assert headers == ["fgsm eps=0.15", "fgsm eps=0.25"]
    lines = [t for t in acc if t.get("mode") == "lines" and not t.get("showlegend")]
    assert sorted(t["name"] for t in lines) == sorted(result.trials["trial"])
    assert {t["type"] for t in lines} == {"scatter"}  # 4 small trials: SVG
    assert all("seed=" in t["hovertemplate"] and "status: finished" in t["hovertemplate"] for t in lines)
    markers = [t for t in acc if t.get("mode") == "markers" and t["x"] != [None]]
    assert {t["name"] for t in markers} == {"fgsm eps=0.25: logged events"}  # no stopper ran: only logged
    assert build(SweepLogs(sweep), tmp_path / "gl.html", webgl=True).figures["overview-de"]["data"][1]["type"] \
        == "scattergl"
    # epoch axes tick on whole epochs (these trials have 2; plotly's own ticks would fall on halves)
    assert result.figures["overview-acc"]["layout"]["xaxis"]["dtick"] == 1
    details = [fig for div, fig in result.figures.items() if div.startswith("trial-")]
    assert details and all(fig["layout"]["xaxis3"]["dtick"] == 1 for fig in details)
    assert epoch_ticks(99) == {"tick0": 0, "dtick": 10} and epoch_ticks(None)["dtick"] == 1  # ~10 ticks on long runs


def test_detect_command(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.detect([str(sweep), "--format", "json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert {e["trial"] for e in events} == {"eps0.25-s0", "eps0.25-s1"}
    assert {"trial", "kind", "epoch", "step", "score", "evidence"} <= set(events[0])
    assert {(e["trial"], e["epoch"]) for e in events if e["kind"] == "co_pgd_probe"} == {
        ("eps0.25-s0", 4), ("eps0.25-s1", 5)}
    assert commands.detect([str(sweep)]) == 0
    assert "co_energy" in capsys.readouterr().out
    # --set: the same detectors with other settings (a drop to 1% of the best probe accuracy fires nowhere)
    assert commands.detect([str(sweep), "--format", "json", "--set", "co_pgd_probe.ratio=0.01"]) == 0
    assert not [e for e in json.loads(capsys.readouterr().out) if e["kind"] == "co_pgd_probe"]
    assert commands.detect([str(sweep), "--set", "ro.energy=logits"]) == 2  # refused before any detector runs, whole
    assert capsys.readouterr().err == ("energy-at detect: error: --set ro.energy: unknown value 'logits'; "
                                       "allowed: gap, held_out\n")
    assert commands.detect([str(sweep), "--set", "ro.fall_z=null"]) == 2  # as detect.ro.* in a config
    assert capsys.readouterr().err.endswith("set one, e.g. --set ro.patience=10\n")


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


def _pixels(shot: Path) -> np.ndarray:
    return (imread(shot)[..., :3] * 255).round().astype(int)


def _share(pixels: np.ndarray, rgb: tuple[int, int, int] | str, tol: int = 30) -> float:
    """Share of pixels within `tol` of colour `rgb` (a tuple or '#rrggbb')."""
    if isinstance(rgb, str):
        rgb = tuple(int(rgb[i:i + 2], 16) for i in (1, 3, 5))
    return float((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).mean())


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium missing: apt-get install -y chromium")


@pytest.mark.browser
def test_report_renders_in_chromium(sweep: Path, tmp_path: Path) -> None:
    _need_chromium()
    out = tmp_path / "report.html"
    assert commands.report([str(sweep), "--out", str(out)]) == 0

    # 1. every plotly figure draws, without a JavaScript error or a request for anything
    probed = tmp_path / "probe.html"
    probed.write_text(probe(out.read_text()))
    summary, errors, _ = render(probed)
    assert errors == []
    assert summary["resources"] == [] and summary["external"] == 0
    figures = {f["id"]: f for f in summary["figures"]}
    assert len(figures) == 3 + 4 and all(f["drawn"] and f["svg"] > 0 for f in figures.values())
    acc, de, results = figures["overview-acc"], figures["overview-de"], figures["overview-results"]
    assert acc["lines"] == de["lines"] == 4  # one SVG line per trial
    assert acc["legend"][:2] == de["legend"][:2] == ["fgsm eps=0.15", "fgsm eps=0.25"]
    assert results["points"] == 4  # a point per trial
    assert acc["points"] == de["points"] == 8  # the 2 CO trials' events: co_energy (3 sources), co_pgd_probe
    detail = [f for i, f in figures.items() if i.startswith("trial-")]
    assert all(f["lines"] >= 8 for f in detail)  # dE, dE(x,y), E, E*, 4 accuracy curves
    assert sorted(f["shapes"] > 0 for f in detail) == [False, False, True, True]  # event lines of the CO trials
    assert {t["cls"]: t["rows"] for t in summary["tables"]}["ranking sortable"] == 2

    # 2. the screenshot shows the plots: the method's line colour, the table header, many colours
    shot = screenshot(out, tmp_path / "shot.png", width=1200, height=3000)
    pixels = _pixels(shot)
    assert pixels.shape[:2] == (3000, 1200)
    # (measured: this page ~0.93 white, tab:blue 7e-4, ~2,600 colours; the same page without plotly.js
    # ~0.97 white, no tab:blue, ~570 colours)
    assert _share(pixels, (255, 255, 255), tol=5) < 0.95
    assert _share(pixels, "#1f77b4") > 2e-4  # fgsm's colour (tab:blue): the overview's lines
    assert _share(pixels, (0xE8, 0xEE, 0xF7), tol=3) > 1e-4  # ranking table header background
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 1200


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict], Report]:
    """60 trials: 4 methods x 3 eps x 5 seeds, 12 of them stopped at CO; the report with WebGL lines
    and at most 10 detail sections."""
    root = tmp_path_factory.mktemp("many")
    facts = many_trials_sweep(root / "sweep", 60)
    return facts, build(SweepLogs(root / "sweep"), root / "report.html", max_trials=10, webgl=True)


def test_report_of_60_trials_figures_and_tables(many: tuple[dict[str, dict], Report]) -> None:
    facts, result = many
    stopped = sorted(t for t, f in facts.items() if f["stopped"])
    assert len(facts) == 60 and len(stopped) == 12
    groups = [f"{m} eps={e:g}" for m in sorted(MANY_METHODS) for e in MANY_EPS]
    for div in ("overview-acc", "overview-de"):
        data = result.figures[div]["data"]
        assert [t["name"] for t in data if t.get("showlegend") and t["legendgroup"] != "_events"] == groups
        lines = [t for t in data if t.get("mode") == "lines" and not t.get("showlegend")]
        assert len(lines) == 60 and {t["type"] for t in lines} == {"scattergl"}
        assert all(f"seed={facts[t['name']]['seed']}" in t["hovertemplate"] for t in lines)
        by_group = {g: {t["name"] for t in lines if t["legendgroup"] == g} for g in groups}
        assert all(len(v) == 5 for v in by_group.values())  # 5 seeds in each (method, eps) group
        marks = {t["name"]: t for t in data if t.get("mode") == "markers" and t["x"] != [None]}
        stops = [t for n, t in marks.items() if n.endswith(": stopped events")]
        assert sum(len(t["text"]) for t in stops) == 12 and {t["marker"]["symbol"] for t in stops} == {"x"}
        assert {t["marker"]["symbol"] for n, t in marks.items() if n.endswith(": logged events")} == {"circle-open"}
    for fig in result.figures.values():
        go.Figure(fig)
    # detail: the 5 best, then stopped ones up to 10 in all; the page says 7 stopped trials were left out
    assert len(result.detail) == 10 and set(result.detail[5:]) <= set(stopped)
    rank = dict(result.trials.select("trial", "rank").iter_rows())
    assert [rank[t] for t in result.detail[:5]] == [1, 2, 3, 4, 5]  # the best seed of each top configuration
    assert result.trials["rank"].is_sorted()  # the trials table is in ranking order
    page = result.path.read_text()
    assert "7 more stopped trials omitted (at most 10 sections)" in page
    _assert_self_contained(page)
    # the trials table: varying keys, status and reason, test results (or none), the evals table
    table = result.trials
    assert table.height == 60 and {"method", "eps", "seed", "optim.lr", "status", "reason", "test_acc_pgd",
                                    "eval clean (best test)", "eval autoattack (best test)"} <= set(table.columns)
    assert "data.name" not in table.columns  # the same in every trial
    rows = {r["trial"]: r for r in table.iter_rows(named=True)}
    assert all(rows[t]["status"] == "stopped" and rows[t]["reason"].startswith("co_pgd_probe after epoch")
               for t in stopped)
    assert all((rows[t]["test_acc_pgd"] is not None) == f["test"] for t, f in facts.items())
    assert all((rows[t]["eval autoattack (best test)"] is not None) == f["evals"] for t, f in facts.items())
    results = result.figures["overview-results"]["data"]
    assert sum(len(t["text"]) for t in results if t["x"] != [None]) == 60
    assert sum(len(t["text"]) for t in results if t["name"].endswith("(best val)")) == sum(
        not f["test"] for f in facts.values())


@pytest.mark.browser
def test_report_of_60_trials_renders_in_chromium(many: tuple[dict[str, dict], Report], tmp_path: Path) -> None:
    _need_chromium()
    facts, result = many
    probed = tmp_path / "probe.html"
    probed.write_text(probe(result.path.read_text(), click={"figure": "overview-acc", "entry": "fgsm eps=0.2"}))
    summary, errors, _ = render(probed)
    assert errors == []
    assert summary["resources"] == [] and summary["external"] == 0  # nothing fetched: works offline
    figures = {f["id"]: f for f in summary["figures"]}
    assert len(figures) == 3 + 10 and all(f["drawn"] and f["svg"] > 0 for f in figures.values())
    groups = [f"{m} eps={e:g}" for m in sorted(MANY_METHODS) for e in MANY_EPS]
    for div in ("overview-acc", "overview-de"):
        fig = figures[div]
        assert fig["legend"] == [*groups, "markers", "event, stopped", "event, logged"]
        assert fig["legendgroups"] == 12 + 1  # one per (method, eps), one for the marker key
        assert fig["traces"] == len(result.figures[div]["data"]) >= 60 + 12
        assert fig["canvases"] > 0 and fig["painted"] > 2000  # WebGL drew the lines
        assert fig["points"] > 12  # SVG event markers on top
    assert figures["overview-results"]["points"] == 60
    # a click on a legend entry hides the whole group: its 5 trials' lines, its markers, its entry
    clicked = summary["clicked"]
    assert clicked["entry"] == "fgsm eps=0.2" and clicked["group"] >= 1 + 5 + 1
    assert clicked["hidden"] == clicked["group"] and clicked["after"] == clicked["before"] - clicked["group"]
    tables = {t["cls"]: t["rows"] for t in summary["tables"]}
    assert tables["trials sortable"] == 60 and tables["ranking sortable"] == 12

    # the screenshot is not blank and shows the methods' colours (WebGL and SVG lines alike)
    shot = screenshot(result.path, tmp_path / "shot.png", width=1400, height=2000)
    pixels = _pixels(shot)
    # (measured: ~0.91 white, each method's colour 1e-4 to 1.6e-3, ~10,800 colours; without plotly.js
    # ~0.98 white, none of the four colours, ~450 colours)
    assert _share(pixels, (255, 255, 255), tol=5) < 0.95
    for color in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"):  # fgsm, n_fgsm, pgd, rs_fgsm
        assert _share(pixels, color, tol=40) > 2e-5, color
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 3000
