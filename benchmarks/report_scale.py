"""Benchmark: `energy-at report` on synthetic sweeps of 8 and 300 trials, built and rendered in headless Chromium.

    .venv/bin/python benchmarks/report_scale.py [--trials 8 300] [--epochs 30 --steps 200] [--repeat 3]

For each size it writes a sweep with tests/support/synth.py `many_trials_sweep` (4 methods x 3 eps x
seeds; CO trials stopped with an `events` row, RO trials, `evals` for every 5th trial), then records

- build: seconds of `analysis.report.build` (detect + rank + figures + HTML), and the file size;
- render: wall seconds of `chromium --headless --dump-dom --virtual-time-budget` on the report with a
  probe script (tests/support/browser.py) that waits until every plotly figure has drawn, minus the
  same for a blank page with the same probe (Chromium's start-up), median of `--repeat` runs
  alternating the two; `drawn_ms`: the page's own performance.now() when the last figure had drawn;
- the JavaScript errors (uncaught, rejections, console.error) the page raised;
- a screenshot of the top of the page (`<data>/<n>/shot-<mode>.png`).
Each size is built with `build(webgl=None)` (auto: WebGL for line figures of more than GL_POINTS
points) and, where that drew a WebGL figure, also with webgl=False (all SVG), to compare.
Prints a Markdown table and one JSON line per size.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from analysis import report as report_module  # noqa: E402
from analysis.read import SweepLogs  # noqa: E402
from support.browser import probe, render, screenshot  # noqa: E402
from support.synth import many_trials_sweep  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

WEBGL = {"auto": None, "on": True, "off": False}
BLANK = "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><p>blank</p></body></html>"


def measure(n: int, args: argparse.Namespace) -> list[dict]:
    """Write a sweep of `n` trials, then build and render its report once per --webgl mode."""
    root = args.data / str(n)
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    facts = many_trials_sweep(root / "sweep", n, epochs=args.epochs, steps=args.steps, n_probe=args.n_probe)
    written = time.perf_counter() - started
    blank = root / "blank.html"
    blank.write_text(probe(BLANK))
    rows = []
    for mode in args.webgl:
        if mode == "off" and rows and rows[-1]["webgl"] == "auto" and not rows[-1]["webgl_figures"]:
            continue  # auto drew no WebGL figure: the same page
        out = root / f"report-{mode}.html"
        started = time.perf_counter()
        result = report_module.build(SweepLogs(root / "sweep", warn=False), out, webgl=WEBGL[mode])
        build = time.perf_counter() - started
        page = root / f"probe-{mode}.html"
        page.write_text(probe(out.read_text()))
        report_s, blank_s, drawn, errors = [], [], [], []
        for _ in range(args.repeat):
            summary, _, seconds = render(blank, budget_ms=args.budget)
            blank_s.append(seconds)
            summary, errs, seconds = render(page, budget_ms=args.budget)
            report_s.append(seconds)
            drawn.append(summary["drawnAt"])
            errors += errs
            figures = summary["figures"]
            assert all(f["drawn"] for f in figures), [f["id"] for f in figures if not f["drawn"]]
            assert not summary["resources"] and not summary["external"], summary["resources"]
        shot = screenshot(out, root / f"shot-{mode}.png", budget_ms=args.budget)
        rows.append({
            "trials": n, "webgl": mode, "stopped": sum(f["stopped"] for f in facts.values()),
            "events": result.events.height, "detail": len(result.detail), "figures": len(figures),
            "traces": sum(f["traces"] for f in figures), "webgl_figures": sum(f["canvases"] > 0 for f in figures),
            "write_s": round(written, 2), "build_s": round(build, 2), "html_bytes": out.stat().st_size,
            "html_mb": round(out.stat().st_size / 2**20, 2),
            "chromium_report_s": round(statistics.median(report_s), 2),
            "chromium_blank_s": round(statistics.median(blank_s), 2),
            "render_s": round(statistics.median(r - b for r, b in zip(report_s, blank_s)), 2),
            "drawn_ms": round(statistics.median(drawn)), "js_errors": sorted(set(errors)), "screenshot": str(shot),
        })
    return rows


def main() -> None:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, nargs="+", default=[8, 300])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200, help="logged batches per epoch")
    ap.add_argument("--n-probe", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=int, default=120_000, help="--virtual-time-budget (ms)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/energy-at-bench-report"))
    ap.add_argument("--webgl", nargs="+", choices=list(WEBGL), default=["auto", "off"],
                    help="build(webgl=...) modes to compare (off is skipped where auto drew no WebGL figure)")
    args = ap.parse_args()
    rows = [row for n in args.trials for row in measure(n, args)]
    print("| trials | webgl (figures) | stopped | events | detail | traces | HTML MB | build s "
          "| chromium report / blank s | render s | drawn at ms | JS errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trials']} | {r['webgl']} ({r['webgl_figures']}) | {r['stopped']} | {r['events']} "
              f"| {r['detail']} | {r['traces']} | {r['html_mb']} "
              f"| {r['build_s']} | {r['chromium_report_s']} / {r['chromium_blank_s']} | {r['render_s']} "
              f"| {r['drawn_ms']} | {len(r['js_errors'])} |")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
