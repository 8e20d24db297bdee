"""How well each signal separates collapsed from healthy trials, threshold-free: ROC AUC with 95% intervals.

    python benchmarks/detection/signals.py [--split test|dev|all] [--seeds S,...] [--segment co|ro|ro_noise]
                                           [--boot 1000] [--format md|json]

Reads the committed corpus (benchmarks/detection/corpus/) and its labels (scoreboard.labels), keeps the
trials labelled collapse (positives) and healthy (negatives), and scores each signal two ways:

- trial level: the trial's largest move on the signal's side (scoreboard.FREE_SIGNALS) from epoch
  FREE_WARMUP on; "did this trial ever move?"
- trial-epoch level ("collapsed by now?"): each epoch of those trials is positive when its trial is
  labelled collapse and the epoch is at or after the onset; its score is the largest move so far
  (causal: what a stopper could know at the end of that epoch).

A move is, for an epoch signal, the epoch mean minus the median of the trial's earlier epoch means
(scoreboard.epoch_shifts); for a step signal (`step z`), the largest robust z of a 20-step mean
against the median and MAD of the trial's previous STEP_REF steps, in that epoch; for the PGD probe,
its relative fall from the best earlier epoch (the probe costs PGD; every other signal is free).
The intervals resample trials (a trial's epochs stay together), `--boot` times, seeded.

`--segment ro` / `ro_noise`: robust overfitting (positives) against healthy multi-step trials, over the
epochs after the lr's first decay (a trial without one has none; `ro` never looks there), with the
signals of RO_SIGNALS (ro_scores). Besides "past its best by now?" (an RO trial's epochs from its onset,
the epoch after its best), a third level asks what issue 24's window does: an RO trial's epochs up to
onset + choose_ro.RO_WINDOW (3 epochs after its best; the scoreboard's "no later than") against the healthy
trials' epochs (an RO trial's later epochs are left out: a stop there is late, not false). And a headroom
column: with the threshold set, on the same trials, just above every healthy trial's largest score (0 false
stops), the RO trials the signal would stop within that window - an upper bound, as the threshold sees the
trials it is scored on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scoreboard  # noqa: E402
from analysis.detectors import ro_epochs  # noqa: E402  (scoreboard put the repository on the path)
from corpus import seed_list  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

SMOOTH, STEP_REF = 20, 400  # steps averaged; steps of the reference before them
MAD_TO_SD = 1.4826


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half); nan without both classes."""
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pl.Series(score).rank("average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def step_moves(batches: pl.DataFrame) -> pl.DataFrame:
    """Per trial and epoch: each free signal's largest robust z (on its side) of a SMOOTH-step mean
    against the median/MAD of the STEP_REF steps before it."""
    b = batches.sort("trial", "step")
    exprs = []
    for signal, side in scoreboard.FREE_SIGNALS.items():
        x = pl.col(signal).cast(pl.Float64)
        x = pl.when(x.is_finite()).then(x)
        now = x.rolling_mean(SMOOTH, min_samples=SMOOTH // 2)
        ref = x.shift(SMOOTH)
        med = ref.rolling_median(STEP_REF, min_samples=STEP_REF // 2)
        mad = (ref - med).abs().rolling_median(STEP_REF, min_samples=STEP_REF // 2)
        z = (now - med) / (MAD_TO_SD * mad / np.sqrt(SMOOTH) + 1e-12)
        exprs.append((z.abs() if side == 0 else side * z).over("trial").alias(signal))
    return b.with_columns(exprs).group_by("trial", "epoch").agg(pl.col(s).max() for s in scoreboard.FREE_SIGNALS)


def probe_fall(epochs: pl.DataFrame) -> pl.DataFrame:
    """Per trial and epoch: the probe's PGD accuracy fall relative to its best earlier epoch."""
    p = epochs.filter(pl.col("split") == "probe").sort("trial", "epoch")
    best = pl.col("acc_pgd").cum_max().shift(1).over("trial")
    return p.select("trial", "epoch", probe=1 - pl.col("acc_pgd") / best)


# RO signals, per epoch after the decay, each oriented so that up reads as robust overfitting (written before
# this table was first run, 2026-12-07): a value's move from the last epoch before the decay, in units of its
# pre-decay noise (1.4826 x the MAD of its epoch-to-epoch changes, as `ro`'s gap_rise); side 0: either way.
RO_FALL, RO_PATIENCE = "val PGD fall below its best since the decay (se)", "epochs since val PGD's best (Rice et al.)"
# what reading a signal costs beyond training; any other is free (the training stream)
COST = {"PGD probe relative fall": "PGD probe", "train probe - val PGD accuracy": "PGD probe",
        "train - val dE(x,y) gap": "PGD probe", "val -dE(x,y)": "val eval", RO_FALL: "val eval", RO_PATIENCE: "val eval"}
RO_SIGNALS = {
    "train probe - val PGD accuracy": 1,  # the robust generalisation gap widens
    "train - val dE(x,y) gap": 1,  # `ro`'s energy="gap": the training probe's drop shrinks, val's does not
    "val -dE(x,y)": 1,  # `ro`'s energy="held_out": the held-out true logit's drop under attack grows
    "batch dE(x) (epoch mean)": 0,  # WEAT's reading: natural and adversarial energies drift apart
    "batch dE(x,y) (epoch mean)": 0,
    "batch de_std (epoch mean)": 1,
    "batch acc_adv (epoch mean)": 1,  # the training set's adversarial examples are fitted
    "batch loss (epoch mean)": -1,
}


def ro_scores(c: dict[str, pl.DataFrame], lab: pl.DataFrame, window: int) -> pl.DataFrame:
    """One row per (trial, epoch after the decay) of the robust_overfitting and healthy trials: `positive`
    (an RO trial at or after its onset), `window` (null where left out) and each signal's largest move so
    far; besides RO_SIGNALS, `ro`'s own statistics (analysis.detectors.ro_epochs): val PGD's fall below its
    best since the decay in standard errors (fall_epochs=1) and the epochs since that best (Rice et al.'s
    patience)."""
    lab = lab.filter(pl.col("label").is_in(["robust_overfitting", "healthy"]))
    keep = pl.col("trial").is_in(lab["trial"].to_list())
    e = c["epochs"].filter(keep)
    val = e.filter(pl.col("split") == "val").select("trial", "epoch", val="acc_pgd", de_val="de_y")
    probe = e.filter((pl.col("split") == "probe") & pl.col("train_loss").is_not_null()).select(
        "trial", "epoch", train="acc_pgd", de_train="de_y")
    finite = lambda col: pl.col(col).cast(pl.Float64).filter(pl.col(col).is_finite()).mean()  # noqa: E731
    batch = c["batches"].filter(keep).group_by("trial", "epoch").agg(
        finite("de").alias("batch dE(x) (epoch mean)"), finite("de_y").alias("batch dE(x,y) (epoch mean)"),
        finite("de_std").alias("batch de_std (epoch mean)"), finite("acc_adv").alias("batch acc_adv (epoch mean)"),
        finite("loss").alias("batch loss (epoch mean)"))
    stats = ro_epochs(e).select("trial", "epoch", "post", **{RO_FALL: pl.col("fall") / pl.col("fall_se"),
                                                               RO_PATIENCE: "score"}).collect()
    t = (val.join(probe, on=["trial", "epoch"], how="left").join(batch, on=["trial", "epoch"], how="left")
         .join(stats, on=["trial", "epoch"]).sort("trial", "epoch")
         .with_columns(**{"train probe - val PGD accuracy": pl.col("train") - pl.col("val"),
                          "train - val dE(x,y) gap": pl.col("de_train") - pl.col("de_val"), "val -dE(x,y)": -pl.col("de_val")}))
    moves = []
    for signal, side in RO_SIGNALS.items():
        x = pl.col(signal)
        pre_dx = pl.when(~pl.col("post")).then(x.diff())
        noise = 1.4826 * (pre_dx - pre_dx.median()).abs().median()
        ref = pl.when(~pl.col("post")).then(x).drop_nulls().last()
        move = (x - ref) / pl.when(noise > 0).then(noise)
        moves.append((move.abs() if side == 0 else side * move).over("trial").alias(signal))
    t = t.with_columns(*moves).filter(pl.col("post"))
    signals = [RO_FALL, RO_PATIENCE, *RO_SIGNALS]
    t = t.select("trial", "epoch", *(pl.col(s).fill_null(float("-inf")).fill_nan(float("-inf")).cum_max().over("trial")
                                    for s in signals))
    t = t.join(lab.select("trial", "label", "onset"), on="trial")
    ro, past = pl.col("label") == "robust_overfitting", pl.col("epoch") >= pl.col("onset")
    return t.with_columns(positive=(ro & past).fill_null(False),
                          window=pl.when(ro & (pl.col("epoch") > pl.col("onset") + window)).then(None).otherwise(ro))


def window_headroom(t: pl.DataFrame) -> dict[str, str]:
    """Per signal of ro_scores' `t`: the RO trials whose score passes, within the window, the largest score of
    any healthy trial ("k/n"): the most a threshold with no false stop could stop in time."""
    signals = [c for c in t.columns if c not in ("trial", "epoch", "label", "onset", "positive", "window")]
    healthy = t.filter(pl.col("label") == "healthy")
    in_window = t.filter((pl.col("label") == "robust_overfitting") & pl.col("window").is_not_null())
    n = in_window["trial"].n_unique()
    return {s: f"{in_window.filter(pl.col(s) > healthy[s].max())['trial'].n_unique()}/{n}" for s in signals}


def scores(c: dict[str, pl.DataFrame], lab: pl.DataFrame) -> pl.DataFrame:
    """One row per (trial, epoch) of the collapse and healthy trials: `positive` and each signal's
    largest move so far."""
    lab = lab.filter(pl.col("label").is_in(["collapse", "healthy"]))
    keep = pl.col("trial").is_in(lab["trial"].to_list())
    c = {k: v.filter(keep) for k, v in c.items()}
    epoch_means = scoreboard.epoch_shifts(c["batches"]).select(
        "trial", "epoch", *(scoreboard._moved(s).alias(f"{s} (epoch mean)") for s in scoreboard.FREE_SIGNALS))
    steps = step_moves(c["batches"]).select(
        "trial", "epoch", *(pl.when(pl.col("epoch") >= scoreboard.FREE_WARMUP).then(pl.col(s)).alias(f"{s} (step z)")
                            for s in scoreboard.FREE_SIGNALS))
    t = (epoch_means.join(steps, on=["trial", "epoch"]).join(probe_fall(c["epochs"]), on=["trial", "epoch"], how="left")
         .rename({"probe": "PGD probe relative fall"}).sort("trial", "epoch"))
    signals = [col for col in t.columns if col not in ("trial", "epoch")]
    t = t.with_columns(pl.col(s).fill_null(float("-inf")).cum_max().over("trial") for s in signals)
    t = t.join(lab.select("trial", "label", "onset"), on="trial")
    return t.with_columns(positive=(pl.col("label") == "collapse") & (pl.col("epoch") >= pl.col("onset")).fill_null(False))


def table(t: pl.DataFrame, boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """AUC and bootstrap 95% interval per signal, at the trial and the trial-epoch level (and, where `t` has a
    `window` column, over its non-null rows: ro_scores)."""
    levels = {"epoch": "positive"} | ({"window": "window"} if "window" in t.columns else {})
    signals = [c for c in t.columns if c not in ("trial", "epoch", "label", "onset", *levels.values())]
    trials = t.group_by("trial", maintain_order=True).agg(pl.col(signals).max(), positive=pl.col("positive").any())
    by_trial = {name: i for i, name in enumerate(trials["trial"])}
    epoch_trial = t["trial"].replace_strict(by_trial).to_numpy()
    rows_of = [np.flatnonzero(epoch_trial == i) for i in range(trials.height)]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, trials.height, trials.height) for _ in range(boot)]
    out = []
    for s in signals:
        ts, tp = trials[s].to_numpy(), trials["positive"].to_numpy()
        boot_trial = [auc(ts[d], tp[d]) for d in draws]
        row = {"signal": s, "cost": COST.get(s, "free"),
               "trial_auc": auc(ts, tp), "trial_lo": np.nanpercentile(boot_trial, 2.5),
               "trial_hi": np.nanpercentile(boot_trial, 97.5)}
        for level, col in levels.items():
            rows = t.select(pl.col(s), pl.col(col)).with_row_index().filter(pl.col(col).is_not_null())
            kept = np.full(t.height, -1)
            kept[rows["index"].to_numpy()] = np.arange(rows.height)
            es, ep = rows[s].to_numpy(), rows[col].to_numpy().astype(bool)
            boot_level = []
            for d in draws:
                idx = kept[np.concatenate([rows_of[i] for i in d])]
                idx = idx[idx >= 0]
                boot_level.append(auc(es[idx], ep[idx]))
            row |= {f"{level}_auc": auc(es, ep), f"{level}_lo": np.nanpercentile(boot_level, 2.5),
                    f"{level}_hi": np.nanpercentile(boot_level, 97.5)}
        out.append(row)
    return pl.DataFrame(out).sort("trial_auc", descending=True)


def markdown(board: pl.DataFrame) -> str:
    """The table as scoreboard.markdown prints it, each AUC with its interval."""
    ci = lambda r, level: f"{r[level + '_auc']:.2f} [{r[level + '_lo']:.2f}, {r[level + '_hi']:.2f}]"  # noqa: E731
    return scoreboard.markdown(pl.DataFrame([
        {"signal": r["signal"], "cost": r["cost"], "trial AUC [95%]": ci(r, "trial"),
         "trial-epoch AUC [95%]": ci(r, "epoch")}
        | ({"window AUC [95%]": ci(r, "window"), "in window at 0 false stops": r["window_at_0_false_stops"]}
           if "window_auc" in r else {})
        for r in board.iter_rows(named=True)]))


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["test", "dev", "all"])
    ap.add_argument("--seeds", type=seed_list, default=None, help="only these seeds of the split, comma-separated")
    ap.add_argument("--segment", default="co", choices=["co", *scoreboard.RO_SEGMENTS],
                    help="co: collapse against healthy single-step trials; ro, ro_noise: robust overfitting against "
                         "healthy multi-step trials, after the decay")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--format", default="md", choices=["md", "json"])
    a = ap.parse_args(argv)
    c = scoreboard.load()
    try:
        lab = scoreboard.select(scoreboard.labels(c).filter(pl.col("segment") == a.segment), a.split, a.seeds)
    except LookupError as e:
        ap.error(str(e))
    if a.segment in scoreboard.RO_SEGMENTS:
        import choose_ro
        t, bad = ro_scores(c, lab, choose_ro.RO_WINDOW), "robust_overfitting"
    else:
        t, bad = scores(c, lab), "collapse"
    board = table(t, a.boot)
    if "window" in t.columns:
        board = board.with_columns(window_at_0_false_stops=pl.col("signal").replace_strict(window_headroom(t)))
    if a.format == "json":
        print(json.dumps(board.to_dicts()))
        return 0
    counts = dict(t.group_by("trial").agg(pl.col("label").first())["label"].value_counts().iter_rows())
    print(f"segment {a.segment}, split {a.split}{'' if a.seeds is None else ', seeds ' + ','.join(map(str, a.seeds))}, "
          f"{a.boot} bootstrap draws over trials")
    print(f"trials: {counts.get(bad, 0)} {bad}, {counts.get('healthy', 0)} healthy; trial-epochs: "
          f"{int(t['positive'].sum())} past the onset, {int((~t['positive']).sum())} not (yet)"
          + (f"; {int(t['window'].sum())} up to 3 epochs after the best" if "window" in t.columns else ""))
    print(markdown(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
