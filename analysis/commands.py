"""`energy-at report | query | detect`: each takes argv (list[str]) and returns an exit code.

Exit codes: 0 ok; 2 usage error, missing sweep dir, no telemetry tables, bad query.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl

from analysis import detectors
from analysis.rank import console, export
from analysis.read import SweepLogs, SweepError
from analysis.report import DETAIL_MAX, TOP, build
from analysis.sql import QueryError, run_sql
from workloads.config import OneLineParser


def _run(parser: argparse.ArgumentParser, argv: list[str], body: Callable[[argparse.Namespace], int]) -> int:
    """Parse argv and run `body`; --help (0), a usage error or an expected failure (2) give exit codes."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return body(args)
    except (SweepError, QueryError, ValueError, KeyError) as exc:
        # str(KeyError) is the repr of its message; any other error's message may end in a quote of its own
        return _fail(parser.prog, str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))


def _sweep(dirs: list[str]) -> SweepLogs:
    sweep = SweepLogs(dirs)
    sweep.require_tables()
    return sweep


def _fail(command: str, message: str) -> int:
    print(f"{command}: error: {' '.join(message.split())}", file=sys.stderr)  # one line
    return 2


def _print_table(frame: pl.DataFrame, rows: int = -1, width: int = 240) -> None:
    with pl.Config(tbl_rows=rows, tbl_cols=-1, tbl_width_chars=width, fmt_str_lengths=200,
                   tbl_hide_dataframe_shape=True):
        print(frame)


def report(argv: list[str]) -> int:
    """energy-at report <sweep_dir>... [--out FILE.html]"""
    parser = OneLineParser(prog="energy-at report", description="HTML report of one or many sweeps")
    parser.add_argument("sweep_dirs", nargs="+")
    parser.add_argument("--out", help="HTML file (default <first sweep_dir>/report.html)")
    parser.add_argument("--max-points", type=int, default=2000,
                        help="dE points per trial (the overview: at most 120,000 over all trials)")
    parser.add_argument("--max-trials", type=int, default=DETAIL_MAX,
                        help=f"detail sections at most (default {DETAIL_MAX}; the overview shows every trial)")
    parser.add_argument("--top", type=int, default=TOP, help=f"detail for the N best trials (default {TOP})")
    parser.add_argument("--webgl", choices=["auto", "on", "off"], default="auto",
                        help="draw the overview's lines with WebGL (auto: figures with many points)")
    parser.add_argument("--ranking", help="also export the ranking (.csv, .json or .parquet)")
    def run(args: argparse.Namespace) -> int:
        sweep = _sweep(args.sweep_dirs)
        out = Path(args.out) if args.out else Path(args.sweep_dirs[0]) / "report.html"
        result = build(sweep, out, max_points=args.max_points, max_trials=args.max_trials, top=args.top,
                       webgl={"auto": None, "on": True, "off": False}[args.webgl])
        if args.ranking:
            export(result.ranking, args.ranking)
        _print_table(console(result.ranking), width=120)
        print(f"report: {result.path}")
        return 0

    return _run(parser, argv, run)


def query(argv: list[str]) -> int:
    """energy-at query <sweep_dir> "<SQL>" [--format table|csv|json|parquet] [--output FILE]"""
    parser = OneLineParser(
        prog="energy-at query",
        description="polars SQL over tables batches, epochs, probes, events, trials",
    )
    parser.add_argument("sweep_dir")
    parser.add_argument("sql")
    parser.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    parser.add_argument("--output", help="write here instead of stdout (required for parquet)")
    def run(args: argparse.Namespace) -> int:
        if args.format == "parquet" and not args.output:
            return _fail(parser.prog, "--format parquet needs --output FILE")
        result = run_sql(_sweep([args.sweep_dir]), args.sql)
        return _emit(result, args.format, args.output)

    return _run(parser, argv, run)


def _emit(frame: pl.DataFrame, fmt: str, output: str | None) -> int:
    if fmt == "parquet":
        frame.write_parquet(output)
    elif fmt == "table":
        if output:
            with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200):
                Path(output).write_text(str(frame) + "\n")
        else:
            _print_table(frame, rows=100)
    else:
        text = frame.write_csv() if fmt == "csv" else json.dumps(frame.to_dicts(), default=str) + "\n"
        if output:
            Path(output).write_text(text)
        else:
            sys.stdout.write(text)
    return 0


def detect(argv: list[str]) -> int:
    """energy-at detect <sweep_dir>... [--format table|json|csv] [--set KIND.SETTING=VALUE ...]"""
    parser = OneLineParser(prog="energy-at detect", description="CO/RO/NaN events of sweeps")
    parser.add_argument("sweep_dirs", nargs="+")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    parser.add_argument("--set", action="append", default=[], metavar="KIND.SETTING=VALUE",
                        help="a detector setting, as a trial's detect.KIND.SETTING (e.g. ro.patience=20); repeatable")
    def run(args: argparse.Namespace) -> int:
        params = detectors.settings(args.set)
        sweep = _sweep(args.sweep_dirs)
        events = detectors.detect(sweep.scan("batches"), sweep.scan("epochs"), sweep.scan("probes"), params)
        events = detectors.with_actions(events, sweep.scan("events"))
        if args.format == "table":
            _print_table(events.drop("schema_version"))
            return 0
        return _emit(events, args.format, None)

    return _run(parser, argv, run)
