"""What a trial's files hold that a tracker has not got yet: epochs after the last one pushed, each with
its downsampled batch stream first, then its epoch metrics; and the trial's final results.

Reads one trial's own part files (`SweepLogs(..., trials=[trial])`, as the stop rule does), so a sync
costs one trial's rows, not the sweep's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from analysis.read import SweepLogs
from workloads.run_dir import RunDir

EPOCH_VALUES = ("n", "acc_nat", "acc_pgd", "e_nat", "e_adv", "e_nat_y", "e_adv_y", "de", "de_y", "de_std")
BATCH_VALUES = ("e_nat", "e_adv", "e_nat_y", "e_adv_y", "de", "de_y", "de_std", "loss", "acc_adv", "aae_frac")
FINAL_KEYS = ("test_acc_nat", "test_acc_pgd", "best_test_acc_nat", "best_test_acc_pgd", "best_val_acc_pgd",
              "best_epoch")  # result.json's numbers, logged at the end
STOP_KEYS = ("status", "stopped_by", "reason")  # result.json's stop decision
POINTS_PER_EPOCH = 20


@dataclass
class Point:
    """Metrics at one global optimiser step."""
    step: int
    metrics: dict[str, float]
    wall_time: float | None = None  # UNIX seconds the row was written


@dataclass
class Epoch:
    """One epoch's points in push order: the batch stream (`batch/<column>`), then the epoch metrics."""
    epoch: int
    points: list[Point] = field(default_factory=list)


def scan(run_dir: RunDir, table: str, trial: str) -> pl.LazyFrame:
    """The trial's rows of `table` (an empty frame with the schema if none), read as the stop rule reads them."""
    return SweepLogs(run_dir.root, warn=False, trials=[trial]).scan(table)


def epoch_points(rows: pl.DataFrame) -> dict[int, Point]:
    """`epochs` rows (a probe and a val row per epoch) -> one point per epoch, named as Tune reports them:
    `val_acc_pgd`, `probe_de`, ..., `train_loss`, `lr`, `epoch`, at the epoch's last step."""
    rows = rows.unique(["epoch", "split"], keep="last", maintain_order=True)
    per_epoch = rows.group_by("epoch").agg(pl.col("step").max(), pl.col("wall_time").max())
    points = {r["epoch"]: Point(r["step"], {"epoch": r["epoch"]}, r["wall_time"])
              for r in per_epoch.iter_rows(named=True)}
    for r in rows.iter_rows(named=True):
        metrics = points[r["epoch"]].metrics
        metrics |= {f"{r['split']}_{c}": r[c] for c in EPOCH_VALUES if r[c] is not None}
        metrics |= {c: r[c] for c in ("train_loss", "lr") if r[c] is not None}
    return dict(sorted(points.items()))


def batch_points(rows: pl.DataFrame, per_epoch: int = POINTS_PER_EPOCH) -> dict[int, list[Point]]:
    """`batches` rows -> about `per_epoch` points an epoch: the means of BATCH_VALUES over runs of
    consecutive steps (nulls skipped: a column is left out of a point where all its rows are null),
    at each run's last step."""
    if rows.is_empty():
        return {}
    rows = rows.unique("step", keep="last", maintain_order=True).sort("step").with_columns(
        bucket=pl.int_range(pl.len()).over("epoch") * per_epoch // pl.len().over("epoch"))
    means = rows.group_by("epoch", "bucket").agg(pl.col("step").max(), pl.col("wall_time").max(),
                                                 *[pl.col(c).mean() for c in BATCH_VALUES]).sort("step")
    out: dict[int, list[Point]] = {}
    for r in means.iter_rows(named=True):
        metrics = {f"batch/{c}": r[c] for c in BATCH_VALUES if r[c] is not None}
        out.setdefault(r["epoch"], []).append(Point(r["step"], metrics, r["wall_time"]))
    return out


def new_epochs(run_dir: RunDir, trial: str, after: int, per_epoch: int = POINTS_PER_EPOCH) -> list[Epoch]:
    """The trial's epochs after epoch `after` that have their `epochs` rows, oldest first."""
    epochs = epoch_points(scan(run_dir, "epochs", trial).filter(pl.col("epoch") > after).collect())
    if not epochs:
        return []
    batches = batch_points(scan(run_dir, "batches", trial).filter(pl.col("epoch").is_in(list(epochs)))
                           .select("epoch", "step", "wall_time", *BATCH_VALUES).collect(), per_epoch)
    return [Epoch(e, [*batches.get(e, []), p]) for e, p in sorted(epochs.items())]


def final_metrics(result: dict) -> dict[str, float]:
    """The numbers of result.json logged at the end (test and best accuracies, best epoch)."""
    return {k: float(result[k]) for k in FINAL_KEYS if isinstance(result.get(k), (int, float))}


def stop_fields(result: dict) -> dict[str, str]:
    """status, stopped_by and reason of result.json, those that are set."""
    return {k: str(result[k]) for k in STOP_KEYS if result.get(k) is not None}
