"""Per-trial metrics and the ranking of configurations aggregated over seeds."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from workloads.methods import read_fields

Frame = pl.DataFrame | pl.LazyFrame

# trials-frame columns that describe a run, not a configuration
RUN_ONLY = frozenset({
    "trial", "trial_id", "sweep", "seed", "out", "status", "reason", "epochs_done",
    "has_config", "resume", "device", "threads", "hostname", "slurm_job_id",
    "data.root", "eval.batch_size", "tracking",
})
RUN_ONLY_PREFIXES = ("hydra.", "cluster.", "runtime.", "result.", "telemetry.", "detect.")  # detect.: the runner's
CO_KINDS = ("co_energy", "co_pgd_probe")
METRICS = ("robust_best", "robust_final", "clean_final", "ro_gap", "co_epoch")
ASCENDING = frozenset({"ro_gap", "co_rate"})  # smaller is better


def trial_metrics(epochs: Frame, events: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per trial from the val split (acc_pgd = robust, acc_nat = clean accuracy).

    robust_best / robust_best_epoch: peak val acc_pgd and its epoch; robust_final,
    clean_final: at the last logged epoch; ro_gap = robust_best - robust_final;
    co / co_epoch: whether and when (first epoch) a CO event (co_energy or
    co_pgd_probe) was raised (null when `events` is None).
    """
    lf = epochs.lazy() if isinstance(epochs, pl.DataFrame) else epochs
    val = (
        lf.filter(pl.col("split") == "val")
        .select("trial", "epoch", "acc_pgd", "acc_nat")
        .unique(subset=["trial", "epoch"], keep="last", maintain_order=True)
        .sort("trial", "epoch")
    )
    best = pl.col("acc_pgd").max()
    metrics = (
        val.group_by("trial")
        .agg(
            epochs_logged=pl.len(),
            robust_best=best,
            robust_best_epoch=pl.col("epoch").filter(pl.col("acc_pgd") == best).first(),
            robust_final=pl.col("acc_pgd").last(),
            clean_final=pl.col("acc_nat").last(),
        )
        .with_columns(ro_gap=pl.col("robust_best") - pl.col("robust_final"))
        .collect()
    )
    if events is None:
        return metrics.with_columns(co=pl.lit(None, pl.Boolean), co_epoch=pl.lit(None, pl.Int32))
    co = (
        events.filter(pl.col("kind").is_in(CO_KINDS))
        .group_by("trial")
        .agg(co_epoch=pl.col("epoch").min())
    )
    trials = pl.concat([metrics.select("trial"), co.select("trial")]).unique(maintain_order=True)
    return (
        trials.join(metrics, on="trial", how="left")
        .join(co, on="trial", how="left")
        .with_columns(co=pl.col("co_epoch").is_not_null())
        .sort("trial")
    )


def config_keys(trials: pl.DataFrame, ignore: frozenset[str] = RUN_ONLY) -> list[str]:
    """Config columns of the trials frame that define a configuration (run-only keys dropped)."""
    return [c for c in trials.columns if c not in ignore and not c.startswith(RUN_ONLY_PREFIXES)]


def unread_as_null(trials: pl.DataFrame) -> pl.DataFrame:
    """The trials frame with each row's `method.*` / `attack.*` fields that its method and attack never
    read set to null (`workloads.methods.read_fields`, what the trial id hashes), and the columns that no
    trial reads dropped: an FGSM trial has no `method.beta`, whatever its config.json holds."""
    cols = [c for c in trials.columns if c.startswith(("method.", "attack."))]
    if "method.name" not in cols or trials.is_empty():
        return trials
    rows = list(trials.select(cols).iter_rows(named=True))
    read = [read_fields(row) for row in rows]
    configured = [r for r, row in zip(read, rows) if row["method.name"] is not None]  # not a trial without config
    unread = [c for c in cols if not any(c in r for r in configured)]
    return trials.with_columns(
        pl.Series(c, [r.get(c) for r in read], dtype=trials.schema[c]) for c in cols if c not in unread
    ).drop(unread)


def rank(
    metrics: pl.DataFrame,
    trials: pl.DataFrame | None = None,
    *,
    by: str = "robust_final",
    descending: bool | None = None,
    ignore: frozenset[str] = RUN_ONLY,
) -> pl.DataFrame:
    """Aggregate per-trial `metrics` over seeds per configuration and sort by `by`.

    Configurations are the distinct values of `config_keys(trials)` once the fields a
    trial's method does not read are null (`unread_as_null`); a trial without
    a config.json is its own configuration. Output: the config keys, n (trials),
    n_failed_or_diverged (status failed/diverged), <metric>_mean / <metric>_std (sample sd,
    ddof=1) for METRICS, co_rate (share of trials with CO). `by` is a metric name
    (its mean is used) or a column; `descending` defaults to True except for
    ro_gap and co_rate.
    """
    if trials is None or trials.is_empty():
        trials = metrics.select("trial").with_columns(has_config=pl.lit(False))
    trials = unread_as_null(trials)
    keys = config_keys(trials, ignore)
    own = pl.when(pl.col("has_config").fill_null(False)).then(pl.lit(None, pl.String)).otherwise(pl.col("trial"))
    joined = (
        trials.join(metrics, on="trial", how="full", coalesce=True)
        .with_columns(_own_config=own)
    )
    failed = pl.col("status").is_in(["failed", "diverged"]) if "status" in joined.columns else pl.lit(False)
    aggs = [pl.len().alias("n"), failed.fill_null(False).sum().alias("n_failed_or_diverged")]
    for m in METRICS:
        x = pl.col(m).cast(pl.Float64)
        aggs += [x.mean().alias(f"{m}_mean"), x.std(ddof=1).alias(f"{m}_std")]
    aggs.append(pl.col("co").cast(pl.Float64).mean().alias("co_rate"))
    table = (
        joined.group_by(*keys, "_own_config", maintain_order=True)
        .agg(aggs)
        .with_columns(
            pl.when(pl.col("_own_config").is_not_null())
            .then(pl.lit("trial=") + pl.col("_own_config"))
            .alias("config")
        )
        .drop("_own_config")
    )
    table = table.select("config", *keys, pl.exclude("config", *keys))
    column = f"{by}_mean" if f"{by}_mean" in table.columns else by
    if column not in table.columns:
        raise KeyError(f"cannot sort by {by!r}; columns: {', '.join(table.columns)}")
    if descending is None:
        descending = by not in ASCENDING
    if not any(table["config"].is_not_null()):
        table = table.drop("config")
    return table.sort(column, descending=descending, nulls_last=True, maintain_order=True)


def export(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV, JSON (list of row objects) or Parquet, chosen by the suffix."""
    path = Path(path)
    writers = {".csv": frame.write_csv, ".json": frame.write_json, ".parquet": frame.write_parquet}
    if path.suffix not in writers:
        raise ValueError(f"unknown export format {path.suffix!r}; use {', '.join(writers)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writers[path.suffix](path)
    return path


def _varying_keys(table: pl.DataFrame) -> list[str]:
    """The ranking's config columns (`config` included) whose value is not the same in every row."""
    keys = [c for c in table.columns if c not in ("n", "n_failed_or_diverged", "co_rate") and not c.endswith(("_mean", "_std"))]
    return [c for c in keys if table.height < 2 or table[c].n_unique() > 1]


def _mean_sd(m: str, digits: int, sep: str) -> pl.Expr:
    """`<m>_mean` and `<m>_std` as one text, e.g. '0.417 ± 0.05' ('-' without a mean)."""
    mean, std = pl.col(f"{m}_mean").round(digits), pl.col(f"{m}_std").round(digits)
    return (mean.cast(pl.String) + pl.when(std.is_not_null()).then(sep + std.cast(pl.String)).otherwise(pl.lit(""))
            ).fill_null("-")


def display(table: pl.DataFrame) -> pl.DataFrame:
    """The ranking with `mean ± std` text columns, for printing and the HTML report;
    config keys with the same value in every row are left out."""
    return table.select(*_varying_keys(table), "n", "n_failed_or_diverged", *(_mean_sd(m, 3, " ± ").alias(m) for m in METRICS),
                        pl.col("co_rate").round(2))


# a terminal's or a Slurm log's metric columns, and their names there
CONSOLE_METRICS = {"robust_final": "robust", "robust_best": "best", "clean_final": "clean"}


def console(table: pl.DataFrame) -> pl.DataFrame:
    """The ranking for a terminal or a Slurm log: the config keys that vary (all-null ones dropped, named
    without their group where that stays unique), n, robust and clean accuracy as mean±sd and the CO rate.
    The `--ranking` export and the report keep every column (`display`)."""
    keys = [c for c in _varying_keys(table) if table[c].null_count() < table.height]
    short = {c: c.split(".")[0] if c.endswith(".name") else c.split(".")[-1] for c in keys}  # method.name: method
    taken = {*CONSOLE_METRICS.values(), "n", "n_failed_or_diverged", "co"}  # the table's other column names
    names = {c: (s if list(short.values()).count(s) == 1 and s not in taken else c) for c, s in short.items()}

    failed = [pl.col("n_failed_or_diverged")] if table["n_failed_or_diverged"].sum() else []
    return table.select(*(pl.col(c).alias(n) for c, n in names.items()), "n", *failed,
                        *(_mean_sd(m, 2, "±").alias(short_metric) for m, short_metric in CONSOLE_METRICS.items()),
                        pl.col("co_rate").round(2).alias("co"))
