"""Polars SQL over a sweep: every telemetry table (batches, epochs, probes, events, evals, ...) and trials."""
from __future__ import annotations

import re

import polars as pl

from analysis.read import SweepLogs
from workloads.telemetry.schema import TABLES


class QueryError(Exception):
    """A query that cannot run; the message is one line naming what exists."""


def frames(sweep: SweepLogs) -> dict[str, pl.LazyFrame]:
    """The lazy tables a query can name (telemetry tables with their schema, even if empty)."""
    tables = {t: sweep.scan(t) for t in TABLES}
    tables["trials"] = sweep.trials().lazy()
    return tables


def run_sql(sweep: SweepLogs, sql: str) -> pl.DataFrame:
    """Run `sql`; unknown tables/columns raise QueryError listing the tables or columns."""
    tables = frames(sweep)
    ctx = pl.SQLContext(frames=tables, eager=False)
    try:
        return ctx.execute(sql).collect()
    except pl.exceptions.PolarsError as exc:
        raise QueryError(_explain(exc, sql, tables)) from None


def _explain(exc: Exception, sql: str, tables: dict[str, pl.LazyFrame]) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if m := re.search(r"relation '([^']+)' was not found", msg):
        return f"unknown table {m.group(1)!r}; tables: {', '.join(tables)}"
    column = None
    if m := re.search(r"no column named '([^']+)' found in table '([^']+)'", msg):
        column, named = m.group(1), [m.group(2)]
    elif m := re.search(r'unable to find column "([^"]+)"', msg):
        column = m.group(1)
        named = [t for t in tables if re.search(rf"\b{t}\b", sql, re.IGNORECASE)]
    if column is None:
        return f"query failed: {msg}"
    listed = "; ".join(
        f"{t} columns: {', '.join(tables[t].collect_schema().names())}" for t in named if t in tables
    )
    return f"unknown column {column!r}" + (f"; {listed}" if listed else f"; tables: {', '.join(tables)}")
