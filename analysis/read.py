"""Lazy, fault-tolerant reading of one or many sweep directories.

Layout (written by trials; paths owned by workloads/run_dir.py):

    <sweep>/<table>/<id>/part-<seq>.parquet            table in TABLES; every file holds `trial`
    <sweep>/<table>/<id>/part-<first>-<last>.parquet   parts first..last merged (a file inside its range is skipped)
    <sweep>/trials/trial=<id>/config.json              flattened trial config
    <sweep>/trials/trial=<id>/result.json              {"status", "reason", "epochs_done", ...}

Sweeps written before kept tables under hive folders, `<table>/trial=<id>/`: both read the same.

Hidden files (names starting with '.' or '_', e.g. a writer's `.part-x.parquet.tmp`)
are ignored. Every file's footer is validated with `pyarrow.parquet.read_metadata`
before the scan; a truncated/corrupt file, or one whose column types cannot be cast
to the schema, is reported on stderr, kept in `SweepLogs.skipped` and left out.
Scans use the explicit schema `arrow_schema(table)`, so columns missing from older
files read as null and unknown extra columns are ignored.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.config import ADDED_LATER
from workloads.run_dir import LEGACY_PREFIX, RunDir
from workloads.telemetry.schema import TABLES, arrow_schema
from workloads.telemetry.writer import part_range, visible_parts

RESULT_KEYS = ("status", "reason", "epochs_done")

# the casts polars does while scanning (see `_compatible`)
_CAST = pl.ScanCastOptions(float_cast=["upcast", "downcast"], integer_cast="upcast")


class SweepError(Exception):
    """A sweep directory is missing or holds no telemetry tables."""


def polars_schema(table: str) -> pl.Schema:
    """The polars schema of `table` (converted from `arrow_schema`)."""
    empty = pa.table({f.name: pa.array([], f.type) for f in arrow_schema(table)})
    return pl.from_arrow(empty).schema  # type: ignore[union-attr]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    """Can polars read a file column of type `have` as `want` (given `_CAST`)?"""
    if have == want or pa.types.is_null(have):
        return True
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return True
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        same_sign = pa.types.is_signed_integer(have) == pa.types.is_signed_integer(want)
        return same_sign and have.bit_width <= want.bit_width
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return any(f(have) for f in strings) and any(f(want) for f in strings)


def check_file(path: Path, table: str) -> str | None:
    """Why `path` cannot be scanned as `table` (None if it can); reads only the footer."""
    try:
        file_schema = pq.read_metadata(path).schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for truncated files
        return f"unreadable footer ({type(exc).__name__}: {exc})"
    want = arrow_schema(table)
    for f in file_schema:
        idx = want.get_field_index(f.name)
        if idx >= 0 and not _compatible(f.type, want.field(idx).type):
            return f"column {f.name!r} has type {f.type}, expected {want.field(idx).type}"
    return None


class SweepLogs:
    """One or many sweep directories (a trial's own out dir is a one-trial sweep).

    `skipped` collects (path, reason) of every file left out; `warn` also prints them.
    """

    def __init__(self, dirs: str | Path | Iterable[str | Path], *, warn: bool = True,
                 trials: Iterable[str] | None = None):
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        self.dirs = [Path(d) for d in dirs]
        self.warn = warn
        # only these trials' folders are listed (the stopper reads one trial of a large sweep)
        self.partitions = ([p for t in trials for p in (t, f"{LEGACY_PREFIX}{t}")] if trials is not None
                           else ["*"])
        self.skipped: list[tuple[Path, str]] = []
        self._files: dict[str, list[Path]] = {}
        self._seen: dict[str, set[Path]] = {}  # footer-checked
        self._valid: dict[str, set[Path]] = {}  # ... and readable
        self.dropped: dict[str, list[Path]] = {}  # per table: files the last refresh took away (see refresh)
        missing = [str(d) for d in self.dirs if not d.is_dir()]
        if missing:
            raise SweepError(f"sweep directory not found: {', '.join(missing)}")

    def files(self, table: str) -> list[Path]:
        """Valid, visible parquet files of `table`, sorted by trial id and part (over all dirs).

        Listed and footer-checked once; `refresh(table)` adds the files written since."""
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        if table not in self._files:
            self._files[table] = []
            self.refresh(table)
        return self._files[table]

    def refresh(self, table: str) -> list[Path]:
        """List `table` again; footer-check only the files not seen before; the new valid ones.

        A merged file (`part-<first>-<last>`) hides the files of its folder whose range it covers (a crash
        left them, or it replaced them since the last listing). When it replaces only files listed before,
        it is not new (it holds the same rows); when files listed before are gone without such a
        replacement, `dropped[table]` names them and a caller holding their rows must read again."""
        known = self._seen.setdefault(table, set())
        valid = self._valid.setdefault(table, set())
        listed = [p for d in self.dirs for part in self.partitions for p in (d / table).glob(f"{part}/*.parquet")
                  if not _hidden(p, d)]
        found = [p for p in listed if p not in known]
        known.update(found)
        with ThreadPoolExecutor(max_workers=8) as pool:
            reasons = list(pool.map(lambda p: check_file(p, table), found))
        for path, why in zip(found, reasons):
            if why is None:
                valid.add(path)
            else:
                self.skipped.append((path, why))
                if self.warn:
                    print(f"warning: skipping {path}: {why}", file=sys.stderr)
        visible = visible_parts([p for p in listed if p in valid])
        before, now = set(self._files.get(table, [])), set(visible)
        new, gone = [], before - now
        for path in now - before:
            span = part_range(path.name)
            inside = [p for p in gone if span and p.parent == path.parent and (r := part_range(p.name))
                      and span[0] <= r[0] and r[1] <= span[1]]
            covers = {i for p in inside for i in range(part_range(p.name)[0], part_range(p.name)[1] + 1)}
            if inside and covers == set(range(span[0], span[1] + 1)):
                gone -= set(inside)  # the same rows in one file: nothing new, nothing lost
            else:
                new.append(path)
        order = lambda p: (_trial_of(p), p.name)  # noqa: E731  trial id, then part sequence
        self.dropped[table] = sorted(gone, key=order)
        self._files[table] = sorted(visible, key=order)
        return sorted(new, key=order)

    def trial_ids(self, table: str) -> list[str]:
        """Sorted trial ids that have valid files of `table` (from the partition dirs)."""
        return sorted({_trial_of(p) for p in self.files(table)})

    def tables(self) -> list[str]:
        """The telemetry tables that have at least one valid file."""
        return [t for t in TABLES if self.files(t)]

    def require_tables(self) -> None:
        """Raise SweepError if no telemetry table has any file."""
        if not self.tables():
            dirs = ", ".join(map(str, self.dirs))
            raise SweepError(f"no telemetry tables ({', '.join(TABLES)}) under {dirs}")

    def scan(self, table: str, files: Sequence[Path] | None = None) -> pl.LazyFrame:
        """Lazy scan of `table` over all valid files, or over `files` of them (empty frame with the schema if none)."""
        schema = polars_schema(table)
        files = self.files(table) if files is None else files
        if not files:
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(
            [str(p) for p in files],
            schema=schema,
            hive_partitioning=False,  # `trial` is in every file, whichever folder layout
            missing_columns="insert",
            extra_columns="ignore",
            cast_options=_CAST,
        )

    def trials(self, *, results: bool = False) -> pl.DataFrame:
        """One row per trial dir: trial, sweep, status, reason, epochs_done, then config keys.

        With `results`, also every other scalar of result.json as `result.<key>` (e.g.
        `result.test_acc_pgd`, `result.best_val_acc_pgd`; null where a trial has none)."""
        rows: list[dict] = []
        for d in self.dirs:
            run_dir = RunDir(d)
            for tid in run_dir.trial_ids():
                if _hidden(run_dir.trial(tid), d):
                    continue
                config = _read_json(run_dir.config_file(tid), self)
                result = _read_json(run_dir.result_file(tid), self)
                row = {"trial": tid, "sweep": str(d)}
                row |= {k: result.get(k) for k in RESULT_KEYS}
                row["has_config"] = bool(config)
                row |= {k: v for k, v in config.items() if k not in row}
                if config:  # a field added later reads as its default in an older trial's config
                    row |= {k: v for k, v in ADDED_LATER.items() if k not in row}
                if results:
                    row |= {f"result.{k}": v for k, v in result.items()
                            if k not in RESULT_KEYS and not isinstance(v, (dict, list))}
                rows.append(row)
        return _frame(rows)


def _trial_of(part: Path) -> str:
    """The trial id of a table file, from its folder (`<id>/` or a legacy `trial=<id>/`)."""
    return part.parent.name.removeprefix(LEGACY_PREFIX)


def _read_json(path: Path, sweep: SweepLogs) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as exc:
        sweep.skipped.append((path, str(exc)))
        if sweep.warn:
            print(f"warning: skipping {path}: {exc}", file=sys.stderr)
        return {}


def _column_dtype(values: Sequence[object]) -> pl.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pl.Boolean()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Float64()
    return pl.String()


def _frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with heterogeneous keys/types -> frame; mixed or nested values become JSON text."""
    base = {"trial": pl.String(), "sweep": pl.String(), "status": pl.String(),
            "reason": pl.String(), "epochs_done": pl.Int64(), "has_config": pl.Boolean()}
    keys = list(base) + sorted({k for r in rows for k in r} - set(base))
    columns = {}
    for key in keys:
        values = [r.get(key) for r in rows]
        dtype = base.get(key) or _column_dtype(values)
        if dtype == pl.String():
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        elif dtype == pl.Float64():
            values = [None if v is None else float(v) for v in values]
        elif dtype == pl.Int64() and key == "epochs_done":
            values = [v if isinstance(v, int) else None for v in values]
        columns[key] = pl.Series(key, values, dtype=dtype)
    return pl.DataFrame(columns)
