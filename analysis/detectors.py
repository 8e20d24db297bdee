"""CO / RO / NaN detectors: pure, causal functions from telemetry frames to events.

Every detector takes polars frames (eager or lazy) of one or many trials and
returns an eager frame with the `events` schema (action='logged'). At most one
event is emitted per (trial, kind, source), at the first row where the rule
holds; `evidence` starts with the source ('batch', 'epoch', 'probe', ...).

Causality: an event at step t (batch level) or epoch e (epoch level, step null)
depends only on rows at or before it, so running a detector on a prefix of a
trial's stream gives exactly the full run's events restricted to that prefix.
The online stopper relies on this (see tests/test_analysis_detectors.py).

The statistics and thresholds are explained in docs/analysis.md.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from typing import Any, Mapping, Optional

import polars as pl

from workloads.telemetry.schema import SCHEMA_VERSION
from workloads.telemetry.trigger import TRIGGER_SIGNALS, Trigger

from analysis.read import polars_schema

Frame = pl.DataFrame | pl.LazyFrame

MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its sd
# `ro`'s energy condition needs this many epoch-to-epoch changes before the decay to know the signal's noise:
# with one or two, the MAD is 0 and any rise, or none, would pass (a decay at epoch 2 stopped a healthy run there)
RO_MIN_PRE_CHANGES = 5
# dE signals watched by co_energy, with the side that counts: 0 both, +1 up only
CO_SIGNALS: dict[str, int] = {"de": 0, "de_y": 0, "de_std": 1}
EVENT_SCHEMA = polars_schema("events")
RO_ENERGIES = ("gap", "held_out")  # what `ro`'s energy condition reads


# ----------------------------------------------------------------- helpers


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _finite(col: str) -> pl.Expr:
    """`col` as Float64 with NaN/inf turned into null (polars orders NaN above all numbers)."""
    x = pl.col(col).cast(pl.Float64)
    return pl.when(x.is_finite()).then(x).alias(col)


def _f(expr: pl.Expr, digits: int = 3) -> pl.Expr:
    """Number formatted for evidence text."""
    return expr.round(digits).cast(pl.String).fill_null("null")


def empty_events() -> pl.DataFrame:
    """An events frame with no rows."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def _events(frame: Frame, kind: str) -> pl.DataFrame:
    """Shape rows with trial, epoch, step, score, evidence into the events schema."""
    return (
        _lazy(frame)
        .select(
            pl.lit(SCHEMA_VERSION, pl.Int16).alias("schema_version"),
            pl.col("trial").cast(pl.String),
            pl.lit(kind, pl.String).alias("kind"),
            pl.col("epoch").cast(pl.Int32),
            pl.col("step").cast(pl.Int64),
            pl.col("score").cast(pl.Float64),
            pl.col("evidence").cast(pl.String),
            pl.lit("logged", pl.String).alias("action"),
        )
        .collect()
    )


def _first(frame: pl.LazyFrame, when: pl.Expr, order: str) -> pl.LazyFrame:
    """The first row (by `order`) of each trial where `when` holds."""
    return (
        frame.filter(when.fill_null(False))
        .sort("trial", order, maintain_order=True)
        .group_by("trial", maintain_order=True)
        .first()
    )


BATCH_COLS = ["trial", "epoch", "step", "loss", "de", "de_y", "de_std"]
BATCH_COLS += [c for c in TRIGGER_SIGNALS if c not in BATCH_COLS]  # read once: co_energy, nan and the trigger
RUN = "_run"  # id of the (trial, epoch) run of an ordered batch frame


def ordered_batches(batches: Frame, cols: list[str] = BATCH_COLS) -> pl.DataFrame:
    """`cols` of batches, each trial contiguous in step order, plus the run id `_run`.

    Read this once and pass it to several detectors. `trial` becomes Categorical
    (cheap equality on 40M rows; events cast it back). SweepLogs.scan reads files in
    (trial, part) order, so the sort is usually skipped; a resumed trial may log a
    step twice, the later row (later part) is kept. A frame this function returned
    is passed through.
    """
    if isinstance(batches, pl.DataFrame) and RUN in batches.columns:
        return batches.select(*cols, RUN)
    if isinstance(batches, pl.DataFrame):
        df = batches.select(cols)
        if df.schema["trial"] != pl.Categorical:
            df = df.with_columns(pl.col("trial").cast(pl.Categorical))
    else:
        lf = batches.select(cols).with_columns(pl.col("trial").cast(pl.Categorical))
        df = lf.collect(engine="streaming").rechunk()  # one chunk per file otherwise: slow ops later
    same = pl.col("trial") == pl.col("trial").shift()
    runs, trials, back = df.select(
        runs=(~same).fill_null(True).sum(),
        trials=pl.col("trial").n_unique(),
        back=(same & (pl.col("step") < pl.col("step").shift())).any(),
    ).row(0)
    if runs != trials or back:
        df = df.sort("trial", "step", maintain_order=True)
    dup = (pl.col("trial") == pl.col("trial").shift(-1)) & (pl.col("step") == pl.col("step").shift(-1))
    if df.select(dup.any()).item():
        df = df.filter(~dup.fill_null(False))
    return _number_runs(df)


def _number_runs(df: pl.DataFrame) -> pl.DataFrame:
    """(Re)number the (trial, epoch) runs of an ordered batch frame: column `_run`, 0, 1, ..."""
    new_run = (pl.col("trial") != pl.col("trial").shift()) | (pl.col("epoch") != pl.col("epoch").shift())
    return df.with_columns((new_run.fill_null(True).cast(pl.UInt32).cum_sum() - 1).set_sorted().alias(RUN))


def _per_run(df: pl.DataFrame, *aggs: pl.Expr) -> pl.DataFrame:
    """Aggregates per (trial, epoch) run, in run order, with n_prev = earlier runs of the trial."""
    return (
        df.group_by(RUN, maintain_order=True)
        .agg(pl.col("trial").first(), pl.col("epoch").first(), *aggs)
        .with_columns(n_prev=pl.int_range(pl.len()).over("trial"))
    )


def _first_hits(frame: pl.LazyFrame, hit: str) -> pl.DataFrame:
    """First row of each trial of an ordered batch frame where column `hit` is true.

    Keeps only rising edges of `hit` before grouping, so no large filter or sort.
    """
    h = pl.col(hit)
    rising = h & ~(h.shift(1) & (pl.col("trial") == pl.col("trial").shift(1))).fill_null(False)
    return frame.filter(rising).group_by("trial", maintain_order=True).first().collect()


def _ordered_epochs(epochs: Frame, split: str, cols: list[str]) -> pl.LazyFrame:
    """Rows of one split, one per (trial, epoch): the epoch-end row (the latest step; a probe the trigger ran
    mid-epoch has an earlier one), in epoch order."""
    return (
        _lazy(epochs)
        .filter(pl.col("split") == split)
        .sort("trial", "epoch", "step", maintain_order=True, nulls_last=False)
        .select(cols)
        .unique(subset=["trial", "epoch"], keep="last", maintain_order=True)
        .sort("trial", "epoch", maintain_order=True)
    )


def _running_count(flag: pl.Expr, name: str) -> pl.Expr:
    """Global running count of `flag` (a column to difference in `_window_count`)."""
    return flag.fill_null(False).cast(pl.Int32).cum_sum().alias(name)


def _window_count(count: str, window: int) -> pl.Expr:
    """How many of the last `window` rows of the same trial had the flag counted in
    column `count` (a `_running_count`); null when the trial has fewer rows so far.

    Needs trial-contiguous rows; O(n) differences of a global running count.
    """
    full = pl.col("trial") == pl.col("trial").shift(window - 1)
    return pl.when(full).then(pl.col(count) - pl.col(count).shift(window).fill_null(0))


def _expanding(col: str, stat: str) -> pl.Expr:
    """Median or MAD of `col` over the trial's earlier rows (excluding the current one)."""
    el = pl.element()
    agg = el.median() if stat == "median" else (el - el.median()).abs().median()
    return pl.col(col).cumulative_eval(agg).shift(1).over("trial")


# ----------------------------------------------------------------- CO from energies


def co_energy(
    batches: Frame | None,
    epochs: Frame | None = None,
    probes: Frame | None = None,
    *,
    z: float = 6.0,
    min_shift: float = 1.0,
    window: int = 20,
    min_share: float = 0.75,
    warmup_epochs: int = 2,
    min_scale: float = 0.05,
    probe_share: float = 0.2,
    share_z: float = 2.0,
    epoch_z: float = 3.5,
) -> pl.DataFrame:
    """Catastrophic overfitting from the delta-energy stream (kind 'co_energy').

    batch: per trial and signal s in (de, de_y, de_std), over the rows that measured f(x)
      (all, or every `telemetry.natural_every` steps), the baseline of epoch e is
      loc = median of the per-epoch means of s over epochs < e and
      scale = sqrt(median(per-epoch sd)^2 + (1.4826 MAD(per-epoch means))^2), >= min_scale.
      A batch is abnormal if |s - loc| >= max(z*scale, min_shift) (de_std: upward
      only); the event fires at the first step where >= min_share of the trial's last
      `window` batches are abnormal on the same side, once >= warmup_epochs epochs
      form the baseline. score = robust z of that batch.
    epoch: the same test on the epoch-level probe-split values (dE against PGD examples),
      against the expanding median / 1.4826*MAD (>= 2*min_scale) of earlier epochs, with
      `epoch_z` for de and de_y and `z` for de_std; fires at the first abnormal epoch.
    probe: per-sample dE = e_nat - e_adv; a sample is abnormal if it lies more than
      max(z*1.4826*MAD, min_shift) from the median of the trial's first probe epoch;
      fires at the first later epoch where the abnormal share s of the n samples exceeds
      probe_share beyond sampling noise: (s - probe_share) / sqrt(probe_share (1 - probe_share) / n)
      >= share_z (one-sided binomial test, normal approximation), so 7 of 32 samples (22%)
      is not evidence for a 20% shift, 11 of 32 or 66 of 256 are. score = s.
    """
    parts = []
    if batches is not None:
        parts.append(_co_batch(batches, z, min_shift, window, min_share, warmup_epochs, min_scale))
    if epochs is not None:
        parts.append(_co_epoch(epochs, epoch_z, min_shift, warmup_epochs, 2 * min_scale, z))
    if probes is not None:
        parts.append(_co_probe(probes, z, min_shift, probe_share, share_z))
    return _concat(parts)


def _co_batch(batches: Frame, z: float, min_shift: float, window: int, min_share: float,
              warmup_epochs: int, min_scale: float) -> pl.DataFrame:
    sig = list(CO_SIGNALS)
    df = ordered_batches(batches, ["trial", "epoch", "step", *sig])
    measured = pl.col("de").is_not_null()  # rows without f(x) (telemetry.natural_every) hold no dE
    if not df.select(measured.all()).item():
        df = _number_runs(df.filter(measured).drop(RUN))
    df = df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in sig)
    # per-epoch stats over the sorted run id, mapped back to rows by gather (no join)
    stats = (
        _per_run(df, *(pl.col(c).mean().alias(f"{c}_mu") for c in sig),
                 *(pl.col(c).std().alias(f"{c}_sd") for c in sig))
        .with_columns(pl.col(f"{c}_{s}").cast(pl.Float64) for c in sig for s in ("mu", "sd"))
        .with_columns(
            *(_expanding(f"{c}_mu", "median").alias(f"{c}_loc") for c in sig),
            *(
                pl.max_horizontal(
                    (_expanding(f"{c}_sd", "median") ** 2
                     + (MAD_TO_SD * _expanding(f"{c}_mu", "mad")) ** 2).sqrt(),
                    pl.lit(min_scale),
                ).alias(f"{c}_scale")
                for c in sig
            ),
        )
    )
    # abnormal: |s - loc| >= max(z * scale, min_shift), i.e. s beyond a per-epoch threshold
    # (null during the warm-up, so nothing is abnormal there)
    reach = {c: pl.max_horizontal(z * pl.col(f"{c}_scale"), pl.lit(min_shift)) for c in sig}
    armed = pl.col("n_prev") >= warmup_epochs
    thresholds = stats.select(
        *(pl.when(armed).then(pl.col(f"{c}_loc") + reach[c]).cast(pl.Float32).alias(f"{c}_hi") for c in sig),
        *(pl.when(armed).then(pl.col(f"{c}_loc") - reach[c]).cast(pl.Float32).alias(f"{c}_lo")
          for c, side in CO_SIGNALS.items() if side == 0),
    )
    run = df[RUN]
    df = df.with_columns(thresholds[name].gather(run) for name in thresholds.columns)
    need = math.ceil(min_share * window)
    counts = [_running_count(pl.col(c) >= pl.col(f"{c}_hi"), f"{c}_up") for c in sig]
    counts += [_running_count(pl.col(c) <= pl.col(f"{c}_lo"), f"{c}_down") for c, side in CO_SIGNALS.items()
               if side == 0]
    hits = [(_window_count(name, window) >= need).fill_null(False).alias(f"{name}_hit")
            for name in (e.meta.output_name() for e in counts)]
    first = _first_hits(
        df.lazy().with_columns(counts).with_columns(hits)
        .with_columns(hit=pl.any_horizontal(e.meta.output_name() for e in hits)),
        "hit",
    ).join(stats.drop("trial", "epoch"), on=RUN, how="left")
    # the signal that fired (largest |z| if several), scores recomputed in float64
    fired = {c: pl.col(f"{c}_up_hit") | (pl.col(f"{c}_down_hit") if CO_SIGNALS[c] == 0 else False) for c in sig}
    candidates = pl.concat([
        first.filter(fired[c]).select(
            "trial", "epoch", "step",
            pl.lit(c).alias("signal"),
            pl.col(c).cast(pl.Float64).alias("value"),
            pl.col(f"{c}_loc").cast(pl.Float64).alias("loc"),
            pl.col(f"{c}_scale").cast(pl.Float64).alias("scale"),
        )
        for c in sig
    ]).with_columns(score=(pl.col("value") - pl.col("loc")) / pl.col("scale"))
    chosen = (
        candidates.sort("trial", pl.col("score").abs(), descending=[False, True], maintain_order=True)
        .group_by("trial", maintain_order=True)
        .first()
        .with_columns(
            evidence=pl.concat_str(
                pl.lit("batch: "), pl.col("signal"), pl.lit("="), _f(pl.col("value")),
                pl.lit(" vs baseline "), _f(pl.col("loc")), pl.lit(" (scale "), _f(pl.col("scale")),
                pl.lit(", z="), _f(pl.col("score"), 1),
                pl.lit(f"); >= {need} of the last {window} batches beyond z={z:g} and {min_shift:g}"),
            )
        )
    )
    return _events(chosen, "co_energy")


def _co_epoch(epochs: Frame, z: float, min_shift: float, warmup_epochs: int, min_scale: float,
              z_spread: float) -> pl.DataFrame:
    sig = list(CO_SIGNALS)
    base = (
        _ordered_epochs(epochs, "probe", ["trial", "epoch", *sig])
        .with_columns(_finite(c) for c in sig)
        .with_columns(n_prev=pl.int_range(pl.len()).over("trial"))
    )
    found = []
    for c, side in CO_SIGNALS.items():
        loc = _expanding(c, "median")
        scale = pl.max_horizontal(MAD_TO_SD * _expanding(c, "mad"), pl.lit(min_scale))
        rows = base.select(
            "trial", "epoch", "n_prev",
            pl.lit(c).alias("signal"), pl.col(c).alias("value"),
            loc.alias("loc"), scale.alias("scale"),
        ).with_columns(score=(pl.col("value") - pl.col("loc")) / pl.col("scale"))
        dev = pl.col("value") - pl.col("loc")
        zc = z if side == 0 else z_spread  # the spread grows in healthy early training: stricter
        hit = (pl.col("score") >= zc) & (dev >= min_shift)
        if side == 0:
            hit = hit | ((pl.col("score") <= -zc) & (dev <= -min_shift))
        found.append(_first(rows, hit & (pl.col("n_prev") >= warmup_epochs), "epoch"))
    first = (
        pl.concat(found)
        .sort("trial", "epoch", pl.col("score").abs(), descending=[False, False, True])
        .group_by("trial", maintain_order=True)
        .first()
        .with_columns(
            step=pl.lit(None, pl.Int64),
            evidence=pl.concat_str(
                pl.lit("epoch: probe "), pl.col("signal"), pl.lit("="), _f(pl.col("value")),
                pl.lit(" vs earlier epochs "), _f(pl.col("loc")), pl.lit(" (scale "),
                _f(pl.col("scale")), pl.lit(", z="), _f(pl.col("score"), 1), pl.lit(")"),
            ),
        )
    )
    return _events(first, "co_energy")


def _co_probe(probes: Frame, z: float, min_shift: float, probe_share: float, share_z: float) -> pl.DataFrame:
    p = (
        _lazy(probes)
        .select("trial", "epoch", (pl.col("e_nat").cast(pl.Float64) - pl.col("e_adv")).alias("d"))
        .with_columns(_finite("d"))
        .with_columns(ref_epoch=pl.col("epoch").min().over("trial"))
    )
    ref = (
        p.filter(pl.col("epoch") == pl.col("ref_epoch"))
        .group_by("trial")
        .agg(med=pl.col("d").median(), mad=(pl.col("d") - pl.col("d").median()).abs().median())
        .with_columns(tol=pl.max_horizontal(z * MAD_TO_SD * pl.col("mad"), pl.lit(min_shift)))
    )
    share = (
        p.filter(pl.col("epoch") > pl.col("ref_epoch"))
        .join(ref, on="trial")
        .group_by("trial", "epoch", "ref_epoch")
        .agg(
            score=((pl.col("d") - pl.col("med")).abs() >= pl.col("tol")).mean(),
            n=pl.col("d").count(),
            med=pl.col("med").first(),
            tol=pl.col("tol").first(),
        )
    )
    noise = (probe_share * (1 - probe_share) / pl.col("n")).sqrt()
    first = _first(share, (pl.col("score") - probe_share) >= share_z * noise, "epoch").with_columns(
        step=pl.lit(None, pl.Int64),
        evidence=pl.concat_str(
            pl.lit("probe: "), _f(100 * pl.col("score"), 1), pl.lit("% of "), pl.col("n").cast(pl.String),
            pl.lit(" samples have |dE - "), _f(pl.col("med")), pl.lit("| >= "), _f(pl.col("tol")),
            pl.lit(" (epoch "), pl.col("ref_epoch").cast(pl.String),
            pl.lit(f" distribution); fires beyond {probe_share:g} + {share_z:g} binomial sd"),
        ),
    )
    return _events(first, "co_energy")


# ----------------------------------------------------------------- CO from the probe's PGD accuracy


def co_pgd_probe(
    epochs: Frame,
    *,
    ratio: float = 0.6,
    min_drop: float = 0.1,
    z: float = 3.0,
) -> pl.DataFrame:
    """Catastrophic overfitting from the probe's PGD accuracy (kind 'co_pgd_probe').

    With a the probe-split acc_pgd of epoch e over n samples and (a_b, n_b) those of the
    trial's best earlier epoch, fires at the first epoch where
      a <= ratio * a_b  and  a_b - a >= min_drop           (the fall is large: a collapse), and
      (a_b - a) / sqrt(p (1 - p) (1/n_b + 1/n)) >= z       (it is not sampling noise),
    p the pooled accuracy: a one-sided two-proportion z-test (z = 3: p ~ 0.001), so a
    32-sample probe needs a fall from about 0.5 to 0.1 where 256 samples show 0.4 -> 0.2.
    Comparing with the best earlier epoch, not the previous one, catches a decline over
    several epochs. A probe the trigger ran mid-epoch is tested like an epoch-end one but never becomes
    the reference: the best of more readings is biased higher, and one spike would then make the next
    ordinary reading look like a fall (frozen again 2026-12-07, docs/detection.md). score = a_b - a.
    """
    e = (
        _probe_rows(epochs)
        .with_columns(a=_finite("acc_pgd"), n=pl.col("n").cast(pl.Float64))
        .with_columns(ref=pl.when(~pl.col("mid_epoch")).then(pl.col("a")))
        .with_columns(ref_max=pl.col("ref").cum_max().forward_fill().over("trial"))
        .with_columns(
            best=pl.col("ref_max").shift(1).over("trial"),
            # n of the best earlier epoch-end probe: the latest at that accuracy
            n_best=pl.when(pl.col("ref") == pl.col("ref_max")).then(pl.col("n")).forward_fill().shift(1).over("trial"),
        )
        .with_columns(pooled=(pl.col("best") * pl.col("n_best") + pl.col("a") * pl.col("n"))
                      / (pl.col("n_best") + pl.col("n")))
        .with_columns(
            score=pl.col("best") - pl.col("a"),
            z=(pl.col("best") - pl.col("a"))
            / (pl.col("pooled") * (1 - pl.col("pooled")) * (1 / pl.col("n_best") + 1 / pl.col("n"))).sqrt(),
        )
    )
    hit = (pl.col("a") <= ratio * pl.col("best")) & (pl.col("score") >= min_drop) & (pl.col("z") >= z)
    first = _first(e, hit, "_order").with_columns(
        step=pl.when(pl.col("mid_epoch")).then(pl.col("step")),
        evidence=pl.concat_str(
            pl.when(pl.col("mid_epoch")).then(pl.lit("step: mid-epoch ")).otherwise(pl.lit("epoch: ")),
            pl.lit("probe acc_pgd "), _f(pl.col("a")), pl.lit(" vs best earlier "), _f(pl.col("best")),
            pl.lit(" (n "), pl.col("n").cast(pl.Int64).cast(pl.String), pl.lit(", z="), _f(pl.col("z"), 1),
            pl.lit(f"); fires at <= {ratio:g}x best, a drop >= {min_drop:g} and z >= {z:g}"),
        ),
    )
    return _events(first, "co_pgd_probe")


# ----------------------------------------------------------------- the energy trigger (when to probe)


def trigger(batches: Frame, **params) -> pl.DataFrame:
    """Every firing of the energy trigger (kind 'trigger'; workloads/telemetry/trigger.py): the step where a
    CUSUM of a free training signal, in the trial's own robust units, crossed h. The trial runs its PGD probe
    at the flush after each; the same class replayed here gives the same steps. `params`: Trigger's fields
    (signals, k, h, warmup). score = the CUSUM."""
    signals = params.get("signals", TRIGGER_SIGNALS)
    df = ordered_batches(batches, ["trial", "epoch", "step", *signals])
    rows = []
    for (trial,), g in df.group_by("trial", maintain_order=True):
        cols = {s: g[s].cast(pl.Float64).fill_null(float("nan")).to_numpy() for s in signals}
        for f in Trigger(**params).update(g["epoch"].to_numpy(), g["step"].to_numpy(), cols):
            rows.append({"trial": str(trial), "epoch": f.epoch, "step": f.step, "score": f.cusum,
                         "evidence": f.evidence()})
    if not rows:
        return empty_events()
    return _events(pl.DataFrame(rows), "trigger")


def _probe_rows(epochs: Frame) -> pl.LazyFrame:
    """Every probe evaluation of each trial in step order: one per epoch end, and those the trial ran mid-epoch
    when the trigger fired (train_loss null, `mid_epoch`); `_order` numbers them. A row logged twice (a resumed
    epoch) counts once, the last."""
    return (
        _lazy(epochs)
        .filter(pl.col("split") == "probe")
        .select("trial", "epoch", "step", "acc_pgd", "n", mid_epoch=pl.col("train_loss").is_null())
        .unique(subset=["trial", "epoch", "step"], keep="last", maintain_order=True)
        .sort("trial", "epoch", "step", maintain_order=True)
        .with_columns(_order=pl.int_range(pl.len()).over("trial"))
    )


def with_trigger(events: pl.DataFrame, fires: pl.DataFrame) -> pl.DataFrame:
    """A mid-epoch co_pgd_probe event's evidence ends with the trigger fire that ran its probe (the latest
    fire at or before its step), as the trial writes it."""
    mid = (pl.col("kind") == "co_pgd_probe") & pl.col("step").is_not_null()
    if fires.is_empty() or events.filter(mid).is_empty():
        return events
    f = fires.select("trial", pl.col("step").alias("fire_step"), pl.col("evidence").alias("fire")).sort("fire_step")
    ev = events.with_row_index("_row")
    joined = (ev.filter(mid).sort("step")
              .join_asof(f, left_on="step", right_on="fire_step", by="trial", strategy="backward",
                         check_sortedness=False)  # both sorted by step: sorted within each trial too
              .select("_row", "fire"))
    return (ev.join(joined, on="_row", how="left")
            .with_columns(evidence=pl.when(pl.col("fire").is_not_null())
                          .then(pl.concat_str("evidence", pl.lit("; "), "fire")).otherwise("evidence"))
            .sort("_row").drop("_row", "fire"))


# ----------------------------------------------------------------- robust overfitting


def ro_epochs(epochs: Frame, *, energy: str = "held_out", fall_epochs: int = 1) -> pl.LazyFrame | None:
    """`ro`'s per-epoch statistics, one row per trial and val epoch (None without lr, de_y and n): `post` (after
    the first decay), `best` and `best_epoch` (val acc_pgd's best since the decay), `score` (epochs since it),
    `gap`, `noise` and `rise` (the energy condition), `fall` and `fall_se` (the val-fall condition)."""
    if not {"lr", "de_y", "n"} <= set(_lazy(epochs).collect_schema().names()):
        return None  # without the lr there is no decay to look after (n: the val size, for the fall)
    post = (pl.col("lr") < pl.col("lr").first()).cum_max().over("trial")
    best = pl.when(post).then(pl.col("val")).otherwise(-math.inf).cum_max().over("trial")
    new_best = post & (pl.col("best") != pl.col("best").shift(1)).over("trial").fill_null(True)
    dg = pl.col("gap").diff().over("trial")
    pre_dg = pl.when(~pl.col("post")).then(dg)
    mad = (pre_dg - pre_dg.median()).abs().median().over("trial")
    noise = pl.when((pre_dg.count().over("trial") >= RO_MIN_PRE_CHANGES) & (mad > 0)).then(MAD_TO_SD * mad)
    low = pl.when(pl.col("post")).then(pl.col("gap")).otherwise(math.inf).cum_min().over("trial")
    all_post = pl.col("post").cast(pl.Int32).rolling_sum(fall_epochs).over("trial") == fall_epochs
    smooth = pl.when(all_post).then(pl.col("val").rolling_mean(fall_epochs).over("trial"))
    return (
        _ordered_epochs(epochs, "val", ["trial", "epoch", "acc_pgd", "de_y", "lr", "n"])
        .rename({"acc_pgd": "val", "de_y": "de_val"})
        .join(_ordered_epochs(epochs, "probe", ["trial", "epoch", "de_y"]).rename({"de_y": "de_train"}),
              on=["trial", "epoch"], how="left")
        .sort("trial", "epoch")
        .with_columns(post=post, gap=(_finite("de_train") if energy == "gap" else 0.0) - _finite("de_val"))
        .with_columns(best=best, noise=noise, rise=pl.col("gap") - low, smooth=smooth)
        .with_columns(smooth_best=pl.col("smooth").cum_max().over("trial"))
        .with_columns(fall=pl.col("smooth_best") - pl.col("smooth"),
                      fall_se=(2 * pl.col("smooth_best") * (1 - pl.col("smooth_best")) / (pl.col("n") * fall_epochs)).sqrt())
        .with_columns(best_epoch=pl.when(new_best).then(pl.col("epoch")).forward_fill().over("trial"),
                      decay=pl.when(pl.col("post")).then(pl.col("epoch")).min().over("trial"))
        .with_columns(score=(pl.col("epoch") - pl.col("best_epoch")).cast(pl.Float64))
    )


def ro(
    epochs: Frame,
    *,
    patience: int | None = None,
    gap_rise: float | None = None,
    energy: str = "held_out",
    fall_z: float | None = 3.5,
    fall_epochs: int = 1,
) -> pl.DataFrame:
    """Robust overfitting (kind 'ro'), after the learning rate's first decay (Rice et al.).

    Looks only at epochs whose lr is below the first epoch's (a trial without a decay never fires)
    and fires at the first one where every condition that is set holds:
    - `patience`: val acc_pgd has not beaten its best since the decay for that many epochs (Rice
      et al.'s early-stopping rule; off by default: it stops a plateau as readily as a fall);
    - `gap_rise`: the training minus held-out energy gap g = dE(x,y) on the training probe - dE(x,y)
      on val (both under the evaluation PGD; dE(x,y) < 0 is the true logit's drop under attack) is
      >= gap_rise x its noise above its lowest value since the decay; the noise is 1.4826 x the MAD of
      g's epoch-to-epoch changes before the decay (the trial's own units), known once there are
      RO_MIN_PRE_CHANGES of them and their MAD is above 0 (an earlier decay leaves it unknown: no
      event; off by default). Robust overfitting fits the training set's adversarial examples (their drop
      shrinks) while the held-out ones' natural and adversarial energies drift apart. `energy="held_out"` reads
      g = -dE(x,y) on val alone (the held-out true logit's drop under attack), in the same units;
    - `fall_z`: val acc_pgd, averaged over its last `fall_epochs` epochs (all after the decay), is >= fall_z
      standard errors below the best such average since the decay. The standard error is the val split's own
      sampling error of the difference of two such averages, sqrt(2 p (1 - p) / (n x fall_epochs)) with p the
      best average and n the val images: a fall, not a plateau, which `patience` cannot tell apart.
    score = epochs since the best val acc_pgd. The defaults (a single epoch's val PGD 3.5 standard errors below
    its best since the decay) were chosen on the dev split of both RO segments by
    benchmarks/detection/choose_ro.py (2026-12-07, session 17; before: the held-out drop alone at 12x, 1e9e188,
    and first the gap alone at 5x, 73ce198; docs/detection.md, "Robust overfitting: the val-fall rule").
    """
    if energy not in RO_ENERGIES:
        raise ValueError(f"ro: energy={energy!r}: use 'gap' or 'held_out'")
    e = ro_epochs(epochs, energy=energy, fall_epochs=fall_epochs)
    if e is None:
        return empty_events()
    hit = pl.col("post")
    if patience is not None:
        hit = hit & (pl.col("score") >= patience)
    if gap_rise is not None:
        hit = hit & (pl.col("rise") >= gap_rise * pl.col("noise")).fill_null(False)
    if fall_z is not None:
        hit = hit & (pl.col("fall") >= fall_z * pl.col("fall_se")).fill_null(False)
    first = _first(e, hit, "epoch").with_columns(
        step=pl.lit(None, pl.Int64),
        evidence=pl.concat_str(
            pl.lit("epoch: after the lr decay at epoch "), pl.col("decay").cast(pl.String),
            pl.lit(", val acc_pgd "), _f(pl.col("val")), pl.lit(" has not beaten its best "), _f(pl.col("best")),
            pl.lit(" (epoch "), pl.col("best_epoch").cast(pl.String), pl.lit(") for "),
            pl.col("score").cast(pl.Int64).cast(pl.String),
            pl.lit(" epochs; train - val dE(x,y) gap " if energy == "gap" else " epochs; val -dE(x,y) "),
            _f(pl.col("gap")), pl.lit(" rose "), _f(pl.col("rise")), pl.lit(" since the decay ("),
            _f(pl.col("rise") / pl.col("noise"), 1), pl.lit(" x its pre-decay noise); its "),
            pl.lit(str(fall_epochs)), pl.lit("-epoch mean "), _f(pl.col("smooth")), pl.lit(" is "), _f(pl.col("fall")),
            pl.lit(" below its best ("), _f(pl.col("fall") / pl.col("fall_se"), 1), pl.lit(" standard errors)"),
        ),
    )
    return _events(first, "ro")


# ----------------------------------------------------------------- NaN / divergence


def nan(
    batches: Frame,
    *,
    factor: float = 10.0,
    patience: int = 5,
    min_steps: int = 50,
) -> pl.DataFrame:
    """Numerical failure (kind 'nan').

    nonfinite: the first batch with NaN/inf in loss, de, de_y or de_std (score 1).
      The dE columns are per-sample differences of the energies, so a non-finite
      energy shows up in them; the four raw energy columns are not read.
    diverged: the first batch ending `patience` consecutive batches whose finite
      loss exceeds `factor` x the mean finite loss of the trial's earlier epochs
      (armed once those hold >= `min_steps` batches). score = loss / that mean.
    """
    cols = ["loss", "de", "de_y", "de_std"]
    df = ordered_batches(batches, ["trial", "epoch", "step", *cols])
    bad = {c: ~pl.col(c).is_finite() for c in cols}
    nonfinite = _first_hits(df.lazy().with_columns(hit=pl.any_horizontal(bad.values())), "hit")
    nonfinite = nonfinite.with_columns(
        score=pl.lit(1.0),
        evidence=pl.concat_str(
            pl.lit("nonfinite: "),
            pl.concat_str([pl.when(b.fill_null(False)).then(pl.lit(c)) for c, b in bad.items()],
                          separator=", ", ignore_nulls=True),
        ),
    )
    finite = pl.col("loss").filter(pl.col("loss").is_finite()).cast(pl.Float64)
    stats = (
        _per_run(df, finite.sum().alias("sum"), finite.count().alias("count"))
        .with_columns(
            before_sum=(pl.col("sum").cum_sum() - pl.col("sum")).over("trial"),
            before_n=(pl.col("count").cum_sum() - pl.col("count")).over("trial"),
        )
        .with_columns(mean_before=pl.col("before_sum") / pl.col("before_n"))
        .with_columns(limit=pl.when(pl.col("before_n") >= min_steps)
                      .then(factor * pl.col("mean_before")).cast(pl.Float32))
    )
    high = (pl.col("loss") > pl.col("limit")) & pl.col("loss").is_finite()
    diverged = (
        _first_hits(
            df.lazy()
            .select("trial", "epoch", "step", "loss", RUN)
            .with_columns(stats["limit"].gather(df[RUN]))
            .with_columns(_running_count(high, "high"))
            .with_columns(hit=(_window_count("high", patience) >= patience).fill_null(False)),
            "hit",
        )
        .join(stats.select(RUN, "mean_before"), on=RUN, how="left")
        .with_columns(
            score=pl.col("loss").cast(pl.Float64) / pl.col("mean_before"),
            evidence=pl.concat_str(
                pl.lit(f"diverged: loss above {factor:g}x the earlier epochs' mean "), _f(pl.col("mean_before")),
                pl.lit(f" for {patience} batches, now "), _f(pl.col("loss")),
            ),
        )
    )
    return _concat([_events(nonfinite, "nan"), _events(diverged, "nan")])


# ----------------------------------------------------------------- all


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return empty_events()
    return pl.concat(parts).sort("trial", "epoch", "step", "kind", nulls_last=True, maintain_order=True)


def with_actions(events: pl.DataFrame, recorded: Frame) -> pl.DataFrame:
    """`events` with action 'stopped' where the trial's own stopper recorded that event (`events` table)."""
    stops = (_lazy(recorded).filter(pl.col("action") == "stopped")
             .select(pl.col("trial").cast(pl.String), "kind", "epoch", pl.lit(True).alias("_stopped"))
             .unique().collect())
    return (events.join(stops, on=["trial", "kind", "epoch"], how="left", maintain_order="left")
            .with_columns(action=pl.when(pl.col("_stopped")).then(pl.lit("stopped")).otherwise("action"))
            .drop("_stopped"))


def detect(
    batches: Frame | None = None,
    epochs: Frame | None = None,
    probes: Frame | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pl.DataFrame:
    """All detectors on whichever tables are given; `params` (kind -> keyword -> value, e.g. `{"ro":
    {"patience": 20}}`) overrides their defaults (`settings` checks the names and types)."""
    kw = {kind: dict((params or {}).get(kind, {})) for kind in DETECTORS}
    if batches is not None:  # read once for co_energy, nan and the trigger
        batches = ordered_batches(batches)
    parts = [co_energy(batches, epochs, probes, **kw["co_energy"])]
    if epochs is not None:
        parts += [co_pgd_probe(epochs, **kw["co_pgd_probe"]), ro(epochs, **kw["ro"])]
    if batches is not None:
        parts.append(nan(batches, **kw["nan"]))
        mid = pl.concat(parts).filter((pl.col("kind") == "co_pgd_probe") & pl.col("step").is_not_null())
        if not mid.is_empty():  # name the fire that ran each such probe; fires are not events of their own
            fires = trigger(batches.filter(pl.col("trial").is_in(mid["trial"].unique().to_list())))
            parts = [with_trigger(p, fires) for p in parts]
    return _concat(parts)


# ----------------------------------------------------------------- settings


DETECTORS = {"co_energy": co_energy, "co_pgd_probe": co_pgd_probe, "ro": ro, "nan": nan}  # events.kind -> detector


def _field_type(hint: Any) -> Any:
    """`int | None` as OmegaConf reads it (Optional[int])."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[inner]
    return hint


def _settings_class(kind: str, fn) -> type:
    """A dataclass of `fn`'s keyword-only settings with the function's own defaults (written once, there)."""
    hints = typing.get_type_hints(fn)
    return _importable(dataclasses.make_dataclass(
        f"{kind}_settings",
        [(q.name, _field_type(hints[q.name]), dataclasses.field(default=q.default))
         for q in inspect.signature(fn).parameters.values() if q.kind is q.KEYWORD_ONLY]))


def _importable(cls: type) -> type:
    """A made class as a name of this module, so that pickle (a Tune trial's parameters) finds it."""
    cls.__module__ = __name__
    globals()[cls.__name__] = cls
    return cls


# Every detector's settings as config fields (`detect.ro.patience=20` in train and train -m,
# `sweep.detect.ro.patience=20`, `energy-at detect --set ro.patience=20`); asdict(...) is `detect`'s `params`
DetectorSettings = _importable(dataclasses.make_dataclass("DetectorSettings", [
    (kind, cls, dataclasses.field(default_factory=cls))
    for kind, cls in ((kind, _settings_class(kind, fn)) for kind, fn in DETECTORS.items())]))


def settings(dotlist: list[str]) -> dict[str, dict[str, Any]]:
    """`["ro.patience=20", ...]` -> `detect`'s params, every setting checked against DetectorSettings
    (ValueError, one line, naming the setting and what it allows, as `detect.KIND.SETTING` in a config)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from workloads.config import omegaconf_error

    kinds = [f.name for f in dataclasses.fields(DetectorSettings)]
    for item in dotlist:
        key, eq, _ = item.partition("=")
        if not (eq and "." in key):
            raise ValueError(f"--set {item!r}: write KIND.SETTING=VALUE, e.g. ro.patience=20 (KIND: {', '.join(kinds)})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DetectorSettings), OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        raise ValueError(f"--set {omegaconf_error(e)}") from None
    if problem := settings_problem(OmegaConf.to_object(merged), "--set "):  # type: ignore[arg-type]
        raise ValueError(f"--set {problem[0]}: {problem[1]}")
    return OmegaConf.to_container(merged)  # type: ignore[return-value]


def settings_problem(s: DetectorSettings, prefix: str = "") -> tuple[str, str] | None:
    """(setting, why) for settings that type checks pass but a detector refuses, else None; `prefix` is how the
    user writes a setting (`detect.` in a config), for the hint."""
    if s.ro.energy not in RO_ENERGIES:
        return "ro.energy", f"unknown value {s.ro.energy!r}; allowed: {', '.join(RO_ENERGIES)}"
    if s.ro.patience is None and s.ro.gap_rise is None and s.ro.fall_z is None:
        return "ro", ("patience, gap_rise and fall_z are all null, so ro would stop every trial at its first epoch "
                      f"after the lr decay; set one, e.g. {prefix}ro.patience=10")
    if s.ro.fall_z is not None and s.ro.fall_z <= 0:
        return "ro.fall_z", f"{s.ro.fall_z}: give a positive number of standard errors (or null to switch it off)"
    if s.ro.fall_epochs < 1:
        return "ro.fall_epochs", f"{s.ro.fall_epochs}: give a positive integer (the epochs val acc_pgd is averaged over)"
    return None
