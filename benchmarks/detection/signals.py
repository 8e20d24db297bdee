"""How well each signal separates collapsed from healthy trials, threshold-free: ROC AUC with 95% intervals.

    python benchmarks/detection/signals.py [--split test|dev|all] [--boot 1000] [--format md|json]

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
    """AUC and bootstrap 95% interval per signal, at the trial and the trial-epoch level."""
    signals = [c for c in t.columns if c not in ("trial", "epoch", "label", "onset", "positive")]
    trials = t.group_by("trial", maintain_order=True).agg(pl.col(signals).max(), positive=pl.col("label").first() == "collapse")
    by_trial = {name: i for i, name in enumerate(trials["trial"])}
    epoch_trial = t["trial"].replace_strict(by_trial).to_numpy()
    rows_of = [np.flatnonzero(epoch_trial == i) for i in range(trials.height)]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, trials.height, trials.height) for _ in range(boot)]
    out = []
    for s in signals:
        ts, tp = trials[s].to_numpy(), trials["positive"].to_numpy()
        es, ep = t[s].to_numpy(), t["positive"].to_numpy()
        boot_trial = [auc(ts[d], tp[d]) for d in draws]
        boot_epoch = []
        for d in draws:
            idx = np.concatenate([rows_of[i] for i in d])
            boot_epoch.append(auc(es[idx], ep[idx]))
        out.append({"signal": s, "free": not s.startswith("PGD probe"),
                    "trial_auc": auc(ts, tp), "trial_lo": np.nanpercentile(boot_trial, 2.5),
                    "trial_hi": np.nanpercentile(boot_trial, 97.5),
                    "epoch_auc": auc(es, ep), "epoch_lo": np.nanpercentile(boot_epoch, 2.5),
                    "epoch_hi": np.nanpercentile(boot_epoch, 97.5)})
    return pl.DataFrame(out).sort("trial_auc", descending=True)


def markdown(board: pl.DataFrame) -> str:
    """The table as scoreboard.markdown prints it, each AUC with its interval."""
    ci = lambda r, level: f"{r[level + '_auc']:.2f} [{r[level + '_lo']:.2f}, {r[level + '_hi']:.2f}]"  # noqa: E731
    return scoreboard.markdown(pl.DataFrame([
        {"signal": r["signal"], "free": "yes" if r["free"] else "no (PGD)", "trial AUC [95%]": ci(r, "trial"),
         "trial-epoch AUC [95%]": ci(r, "epoch")} for r in board.iter_rows(named=True)]))


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["test", "dev", "all"])
    ap.add_argument("--seeds", type=seed_list, default=None, help="only these seeds of the split, comma-separated")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--format", default="md", choices=["md", "json"])
    a = ap.parse_args(argv)
    c = scoreboard.load()
    try:  # collapse against healthy: the single-step trials
        lab = scoreboard.select(scoreboard.labels(c).filter(pl.col("segment") == "co"), a.split, a.seeds)
    except LookupError as e:
        ap.error(str(e))
    t = scores(c, lab)
    board = table(t, a.boot)
    if a.format == "json":
        print(json.dumps(board.to_dicts()))
        return 0
    n_trials = t.group_by("trial").agg(pl.col("label").first())["label"].value_counts().sort("label")
    counts = dict(n_trials.iter_rows())
    print(f"split {a.split}{'' if a.seeds is None else ', seeds ' + ','.join(map(str, a.seeds))}, {a.boot} bootstrap draws over trials")
    print(f"trials: {counts.get('collapse', 0)} collapse, {counts.get('healthy', 0)} healthy; trial-epochs: "
          f"{int(t['positive'].sum())} collapsed, {int((~t['positive']).sum())} not (yet)")
    print(markdown(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
