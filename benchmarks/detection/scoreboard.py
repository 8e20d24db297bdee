"""The detection scoreboard: every detector and baseline against the corpus's labels, per split.

    python benchmarks/detection/scoreboard.py [--split test|dev|outside|all] [--seeds S,...] [--segment co|ro|ro_noise]
                                              [--stops] [--corpus DIR] [--format md|json]

Reads the packed corpus (benchmarks/detection/corpus/, made by corpus.py), labels each trial from
its val PGD curve (docs/detection.md, "Labels"), runs the project's detectors with their defaults
and the published baselines, and prints per rule: recall on collapses and on all bad trials, false
stops on healthy trials, the median delay after the labelled onset (epochs and steps; negative is
early), the harm (best val PGD lost against running the trial to its end: mean and worst), the
share of training steps a stopper on that rule would have saved (all trials; single-step trials
net of the PGD probes the rule ran, in training-step equivalents), and whether each (eps,
training-set size) group's best grid point by final val PGD stays the same under stopping.
A rule "stops" at the end of the epoch of its first event (the stopper decides after each epoch), or, for
an event with a step (a probe the energy trigger ran mid-epoch), at that step.

`--segment ro` scores the robust-overfitting segment (corpus.py's RO grid; `ro_noise`: its RO_NOISE grid) instead: per rule, the RO
trials it stops no later than 3 epochs after their best epoch, the healthy ones it stops, the harm
on the trials it stops, how many epochs after the best it stops, and the steps it saves. Its `ro`,
Rice et al.'s and the energy-only settings come from the dev split (choose_ro.py's rule).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))  # choose_ro

from analysis.detectors import co_pgd_probe, detect, trigger  # noqa: E402
from corpus import REFERENCE_SEEDS, RO_SEGMENTS, seed_list  # noqa: E402
from orchestrator.config import DEFAULT_STOP_ON  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

CORPUS = HERE / "corpus"
COLLAPSE_RATIO, COLLAPSE_DROP = 0.5, 0.10
NEVER_ROBUST_RATIO = 0.5
RO_GAP = 0.05
WONG_BATCH, WONG_DROP = 128, 0.2  # Wong et al.: PGD on one training batch, stop on a 0.2 drop
ELLE_SD = 2.0  # ELLE-A's rule: a value beyond mean + 2 sd of all its past values
SINGLE_STEP = ["fgsm", "rs_fgsm", "n_fgsm", "der"]  # the CO-prone methods: one attack gradient a step


def load(corpus: Path = CORPUS) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(corpus / f"{t}.parquet") for t in ("trials", "batches", "epochs", "probes")}


# ----------------------------------------------------------------- labels (ground truth)


def label(acc: list[float], reference: float, decay: int | None = None) -> tuple[str, int | None]:
    """(label, onset epoch) of one val PGD curve; `reference` is R(eps, n) of docs/detection.md. `decay`: the
    first epoch trained after the lr's first decay, for the RO segment, whose robust overfitting counts only
    after it (Rice et al.): the best epoch is looked for from there on; None: anywhere."""
    for e in range(1, len(acc)):
        before = max(acc[:e])
        if acc[e] <= COLLAPSE_RATIO * before and before - acc[e] >= COLLAPSE_DROP:
            return "collapse", e
    if max(acc) < NEVER_ROBUST_RATIO * reference:
        return "never_robust", 0
    best = max(range(decay or 0, len(acc)), key=acc.__getitem__, default=None)
    if best is not None and best < len(acc) - 1 and acc[best] - acc[-1] >= RO_GAP:
        return "robust_overfitting", best + 1
    return "healthy", None


def labels(c: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per trial: config keys, split, val curve, label, onset epoch and step."""
    trials = c["trials"] if "segment" in c["trials"].columns else c["trials"].with_columns(segment=pl.lit(None, pl.String))
    t = trials.select("trial", "seed", "split", "segment", pl.col("method.name").alias("method"), pl.col("attack.eps").alias("eps"),
                           pl.col("data.subset").alias("n"), pl.col("schedule.name").alias("schedule"), "epochs",
                           probe_steps=probe_steps())
    t = t.with_columns(point=pl.col("trial").str.replace(r"-s\d+$", ""),
                       segment=pl.col("segment").fill_null("co"))
    curves = (c["epochs"].filter(pl.col("split") == "val").sort("trial", "epoch")
              .group_by("trial", maintain_order=True).agg(acc=pl.col("acc_pgd"), lrs=pl.col("lr"),
                                                          last_step=pl.col("step").max()))
    t = t.join(curves, on="trial")
    # R(eps, n) over the seeds the labels were written for (corpus.REFERENCE_SEEDS), so that a trial added later
    # (test seeds 12-13, outside 14-15) moves no other trial's label; a group without them uses its own trials. Groups
    # are per segment: the label-noise RO segment shares eps and n with the first one
    ref_seed = pl.col("seed").is_in(REFERENCE_SEEDS)
    best = (t.with_columns(best=pl.col("acc").list.max()).group_by("segment", "eps", "n")
            .agg(ref=pl.coalesce(pl.col("best").filter(ref_seed).median(), pl.col("best").median())))
    t = t.join(best, on=["segment", "eps", "n"])
    rows = []
    for r in t.iter_rows(named=True):
        decay = next((e for e, lr in enumerate(r["lrs"]) if lr < r["lrs"][0]), len(r["lrs"]))
        lab, onset = label(r["acc"], r["ref"], decay if r["segment"] in RO_SEGMENTS else None)
        spe = (r["last_step"] + 1) // len(r["acc"])
        rows.append(r | {"label": lab, "onset": onset, "onset_step": None if onset is None else onset * spe,
                         "steps_per_epoch": spe, "total_steps": r["last_step"] + 1})
    return pl.DataFrame(rows)


def probe_steps() -> pl.Expr:
    """One epoch's PGD probe in training-step equivalents (forward-backward passes over a sample):
    probe_size x restarts x (pgd_steps + 1) against batch_size x (attack gradients + 1) a step."""
    c = pl.col
    attack = pl.when(c("method.name").is_in(SINGLE_STEP)).then(1).otherwise(c("attack.steps"))
    return (c("data.probe_size") * c("eval.restarts") * (c("eval.pgd_steps") + 1)
            / (c("batch_size") * (attack + 1))).cast(pl.Float64)


# ----------------------------------------------------------------- rules: first (epoch, step) per trial

# Each rule comes with whether it needs the PGD probe (its cost counts against its savings): the free
# training stream and the val split, which every trial evaluates anyway (best checkpoint, `ro`), cost nothing.
NONE, EPOCH, TRIGGER = "none", "epoch ends", "epoch ends + trigger"  # which PGD probes a rule runs
GATED = "trigger + epoch ends after a fire"  # the other variant: the epoch-end probe only in an epoch the trigger
# fired in (and after the first epoch, the baseline)
Rule = tuple[pl.DataFrame, str]  # (first stop per trial, the probes it runs: NONE, EPOCH or TRIGGER)
PROBE_KINDS = {"co_pgd_probe", "co_energy"}  # co_energy as a whole: its epoch and probe sources read the probe


def energy_rules(c: dict[str, pl.DataFrame], events: pl.DataFrame, gated_epochs: pl.DataFrame) -> dict[str, Rule]:
    """The project's detectors with their defaults, per kind and (co_energy) per source, from `events` (detect()
    on `c`) and `gated_epochs` (gated(): what the variant without the every-epoch probe logs). co_energy's epoch
    source reads the probe split's dE, its probe source the probe's samples; its batch source is free.
    `co_pgd_probe` reads every probe the trials ran, the trigger's mid-epoch ones too; "epoch-end probes
    only" is the rule without the trigger (the corpus's dev and test trials have no mid-epoch probes)."""
    events = events.with_columns(source=pl.col("evidence").str.split(":").list.first())
    co = pl.col("kind") == "co_energy"
    epoch_end = c["epochs"].filter(pl.col("train_loss").is_not_null() | (pl.col("split") != "probe"))
    return {"co_pgd_probe, epoch-end probes only (no trigger)": (_first(co_pgd_probe(epoch_end)), EPOCH),
            "co_pgd_probe, epoch-end probe only after a fire (+ epoch 1's)": (_first(co_pgd_probe(gated_epochs)),
                                                                            GATED)} | {
        name: (_first(events.filter(sel)), probe) for name, sel, probe in [
        ("co_energy (all sources)", co, EPOCH),
        ("co_energy batch", co & (pl.col("source") == "batch"), NONE),
        ("co_energy epoch", co & (pl.col("source") == "epoch"), EPOCH),
        ("co_energy probe", co & (pl.col("source") == "probe"), EPOCH),
        ("co_pgd_probe", pl.col("kind") == "co_pgd_probe", TRIGGER),
        ("ro", pl.col("kind") == "ro", NONE),
        (f"default stop_on ({', '.join(DEFAULT_STOP_ON)})", pl.col("kind").is_in(DEFAULT_STOP_ON),
         TRIGGER if "co_pgd_probe" in DEFAULT_STOP_ON else EPOCH if PROBE_KINDS & set(DEFAULT_STOP_ON) else NONE),
    ]}


def _first(events: pl.DataFrame) -> pl.DataFrame:
    """Each trial's first stop: (epoch, step) with step null where the stopper acts at the epoch's end. Only a
    probe the trigger ran mid-epoch (a `co_pgd_probe` event with a step) stops a trial within the epoch; the
    steps of per-batch events (co_energy's batch source, nan, the per-step baselines) say where the signal
    moved, but the stopper reads them after the epoch."""
    within = (pl.col("kind") == "co_pgd_probe") if "kind" in events.columns else pl.lit(False)
    return (events.sort("epoch", "step", nulls_last=True).group_by("trial").first()
            .select("trial", "epoch", step=pl.when(within).then(pl.col("step")).cast(pl.Int64)))


def wong_probe(probes: pl.DataFrame) -> pl.DataFrame:
    """Wong et al.: PGD accuracy of one training batch (the probe's first 128 samples) drops > 0.2."""
    ids = probes.select("trial", "sample_id").unique().sort("trial", "sample_id").group_by("trial").head(WONG_BATCH)
    acc = (probes.join(ids, on=["trial", "sample_id"]).group_by("trial", "epoch")
           .agg(acc=pl.col("correct_adv").mean()).sort("trial", "epoch"))
    hit = acc.with_columns(drop=pl.col("acc").shift(1).over("trial") - pl.col("acc")).filter(pl.col("drop") > WONG_DROP)
    return _first(hit.with_columns(step=pl.lit(None, pl.Int64)))


def relative_probe(epochs: pl.DataFrame, ratio: float = 0.5) -> pl.DataFrame:
    """Probe-split PGD accuracy at most `ratio` x its best earlier value."""
    p = epochs.filter(pl.col("split") == "probe").sort("trial", "epoch")
    p = p.with_columns(best=pl.col("acc_pgd").cum_max().shift(1).over("trial"))
    return _first(p.filter(pl.col("acc_pgd") <= ratio * pl.col("best")).with_columns(step=pl.lit(None, pl.Int64)))


def adaptive(batches: pl.DataFrame, signal: str, warmup: int = 20) -> pl.DataFrame:
    """ELLE-A's rule on a per-batch signal: a value above mean + 2 sd of all its past values
    (after `warmup` measured batches)."""
    b = batches.filter(pl.col(signal).is_not_null() & pl.col(signal).is_not_nan()).sort("trial", "step")
    past = pl.col(signal).cast(pl.Float64)
    b = b.with_columns(
        n=pl.int_range(pl.len()).over("trial"),
        mean=past.cum_sum().shift(1).over("trial") / pl.int_range(pl.len()).over("trial"),
        sq=(past ** 2).cum_sum().shift(1).over("trial") / pl.int_range(pl.len()).over("trial"),
    ).with_columns(sd=(pl.col("sq") - pl.col("mean") ** 2).clip(lower_bound=0).sqrt())
    hit = b.filter((pl.col("n") >= warmup) & (past > pl.col("mean") + ELLE_SD * pl.col("sd")))
    return _first(hit)


# free training-stream signals: the epoch mean of a batch column against the median of the trial's
# earlier epochs; side +1 counts a rise only, 0 either way
FREE_SIGNALS = {"aae_frac": 1, "de_y": 0, "de_std": 1, "acc_adv": 1, "loss": 1}
FREE_WARMUP = 2  # epochs before the rule may fire (as co_energy's warm-up)


def epoch_shifts(batches: pl.DataFrame) -> pl.DataFrame:
    """Per trial and epoch: each free signal's epoch mean minus the median of its earlier epochs."""
    cols = list(FREE_SIGNALS)
    means = (batches.group_by("trial", "epoch")
             .agg(pl.col(c).cast(pl.Float64).filter(pl.col(c).is_finite()).mean() for c in cols)
             .sort("trial", "epoch"))
    return means.with_columns(
        (pl.col(c) - pl.col(c).cumulative_eval(pl.element().median()).shift(1).over("trial")).alias(c)
        for c in cols)


def _moved(signal: str) -> pl.Expr:
    """How far `signal` moved on its side (FREE_SIGNALS), from epoch FREE_WARMUP on (null before)."""
    d = pl.col(signal)
    moved = d.abs() if FREE_SIGNALS[signal] == 0 else FREE_SIGNALS[signal] * d
    return pl.when(pl.col("epoch") >= FREE_WARMUP).then(moved)


def shift_rule(shifts: pl.DataFrame, signal: str, threshold: float) -> pl.DataFrame:
    """Stops where `signal` moved >= threshold (on its side) from its earlier epochs' median."""
    hit = shifts.filter(_moved(signal) >= threshold)
    return _first(hit.with_columns(step=pl.lit(None, pl.Int64)))


def dev_threshold(shifts: pl.DataFrame, lab_dev: pl.DataFrame, signal: str) -> float | None:
    """The smallest threshold with no false stop on the dev split's healthy trials (most recall)."""
    healthy = lab_dev.filter(pl.col("label") == "healthy")["trial"].to_list()
    worst = shifts.filter(pl.col("trial").is_in(healthy)).select(_moved(signal).max()).item()
    if worst is None:
        return None
    return max(float(worst), 0.0) * (1 + 1e-6) + 1e-9  # just above every healthy move (and a move at all)


def oracle(lab: pl.DataFrame) -> pl.DataFrame:
    """Stop every bad trial at the end of its labelled onset epoch: the most a stopper can save
    without stopping a healthy trial or a bad one before it went bad (never robust: epoch 0)."""
    return (lab.filter(pl.col("onset").is_not_null())
            .select("trial", epoch=pl.col("onset").cast(pl.Int32), step=pl.lit(None, pl.Int64)))


TRIGGER_H = (40.0, 60.0, 80.0, 120.0, 160.0, 240.0, 320.0, 480.0, 640.0)  # energy-only rule: h to choose from


def trigger_rule(batches: pl.DataFrame, h: float) -> pl.DataFrame:
    """Energy only: stop at the trigger's first fire (its signals and k, a larger h)."""
    return _first(trigger(batches, h=h))


def dev_trigger_h(batches: pl.DataFrame, lab_dev: pl.DataFrame) -> float | None:
    """The smallest h in TRIGGER_H whose first fire stops no healthy dev trial (most recall)."""
    healthy = batches.filter(pl.col("trial").is_in(lab_dev.filter(pl.col("label") == "healthy")["trial"].to_list()))
    return next((h for h in TRIGGER_H if trigger(healthy, h=h).is_empty()), None)


def all_rules(c: dict[str, pl.DataFrame], events: pl.DataFrame, gated_epochs: pl.DataFrame, lab: pl.DataFrame,
              shifts: pl.DataFrame, free: dict[str, float | None], trigger_h: float | None) -> dict[str, Rule]:
    """Every rule's stops on the trials of `c`, and which probes it runs; `events` and `gated_epochs` as for
    energy_rules, `shifts` (epoch_shifts), the free signals' thresholds and the energy-only trigger's h (from dev)."""
    rules = {"oracle: stop at the labelled onset": (oracle(lab), NONE), **energy_rules(c, events, gated_epochs)}
    for signal, t in free.items():
        if t is not None:
            side = "moves" if FREE_SIGNALS[signal] == 0 else "rises"
            rules[f"free: epoch-mean {signal} {side} >= {t:.3g} (threshold from dev)"] = (shift_rule(shifts, signal, t),
                                                                                          NONE)
    if trigger_h is not None:
        rules[f"energy only: the trigger's first fire stops (h={trigger_h:g}, from dev)"] = (
            trigger_rule(c["batches"], trigger_h), NONE)
    epoch_end = c["epochs"].filter(pl.col("train_loss").is_not_null() | (pl.col("split") != "probe"))
    rules["baseline: Wong PGD-probe (128, drop 0.2)"] = (wong_probe(c["probes"]), EPOCH)
    rules["baseline: probe PGD relative drop (0.5x best)"] = (relative_probe(epoch_end), EPOCH)
    # ELLE-A's mean + 2 sd rule, on signals the corpus has (not ELLE's local-linearity error, which it lacks)
    rules["baseline: mean + 2 sd rule (ELLE-A's) on aae_frac"] = (adaptive(c["batches"], "aae_frac"), NONE)
    rules["baseline: mean + 2 sd rule (ELLE-A's) on batch dE(x,y)"] = (adaptive(c["batches"], "de_y"), NONE)
    return rules


# ----------------------------------------------------------------- scoring


def gated(epochs: pl.DataFrame) -> pl.DataFrame:
    """`epochs` as the variant without the every-epoch probe would have logged them: the probe rows the trigger
    ran mid-epoch, and an epoch-end probe row only for the first epoch and for an epoch with a fire in it."""
    probe, mid = pl.col("split") == "probe", pl.col("train_loss").is_null()
    fired = epochs.filter(probe & mid).select("trial", "epoch").unique().with_columns(fired=pl.lit(True))
    ends = (epochs.filter(probe & ~mid).join(fired, on=["trial", "epoch"], how="left")
            .filter(pl.col("fired").is_not_null() | (pl.col("epoch") == 0)).drop("fired"))
    return pl.concat([epochs.filter(~probe | mid), ends])


def mid_epoch_probes(epochs: pl.DataFrame) -> pl.DataFrame:
    """(trial, step) of every probe a trial ran mid-epoch on a trigger fire (train_loss null)."""
    return epochs.filter((pl.col("split") == "probe") & pl.col("train_loss").is_null()).select("trial", "step")


# Over labelled trials joined with their stop (stop_epoch; stop_step when stopped mid-epoch, at a triggered probe):
STOPPED = pl.col("stop_epoch").is_not_null()
MID_EPOCH = pl.col("stop_step").is_not_null()
EPOCH_ENDS = pl.when(MID_EPOCH).then(pl.col("stop_epoch")).otherwise(pl.col("stop_epoch") + 1)  # reached before the stop
# of a stopped trial: the best val PGD of the full run minus the best it keeps (its best checkpoint up to the stop;
# stopped mid-epoch, the epochs before it: the corpus has no val of the model at the stop step)
HARM = pl.col("acc").list.max() - pl.col("acc").list.head(EPOCH_ENDS).list.max().fill_null(0.0)
IN_WINDOW = pl.col("stop_epoch").is_between(pl.col("onset") - 2, pl.col("onset") + 1)  # of a collapse


def score(lab: pl.DataFrame, stops: pl.DataFrame, probe: bool = False, mid_probes: pl.DataFrame | None = None,
          end_probes: pl.DataFrame | None = None) -> dict:
    """The scoreboard row of one rule over the labelled trials `lab`; `probe`: the rule runs the PGD probe
    after each epoch it trains (its cost is subtracted from the single-step trials' savings); `mid_probes`
    (trial, step): the probes the trigger ran mid-epoch, counted up to the stop; `end_probes` (trial, epoch): the
    epoch-end probes the rule runs, when not every epoch's."""
    t = lab.join(stops.rename({"epoch": "stop_epoch", "step": "stop_step"}), on="trial", how="left")
    stopped, mid = STOPPED, MID_EPOCH
    mid_probes = mid_probes if mid_probes is not None else pl.DataFrame(schema={"trial": pl.String, "step": pl.Int64})
    # the stop as a step: the end of the stop epoch, or the mid-epoch step
    stop_step = pl.when(mid).then(pl.col("stop_step") + 1).otherwise((pl.col("stop_epoch") + 1) * pl.col("steps_per_epoch"))
    counted = (t.select("trial", "stop_step", limit=pl.when(stopped).then(stop_step)).join(mid_probes, on="trial")
               .filter(pl.col("limit").is_null() | (pl.col("step") < pl.col("limit")))
               .group_by("trial").agg(n_mid=pl.len()))
    t = t.join(counted, on="trial", how="left").with_columns(pl.col("n_mid").fill_null(0))
    if end_probes is not None:  # those run before the stop (a mid-epoch stop: before its epoch's end)
        ran = (t.select("trial", limit=pl.when(stopped).then(EPOCH_ENDS)).join(end_probes, on="trial")
               .filter(pl.col("limit").is_null() | (pl.col("epoch") < pl.col("limit"))).group_by("trial").agg(n_end=pl.len()))
        t = t.join(ran, on="trial", how="left").with_columns(pl.col("n_end").fill_null(0))
    harm = t.select(pl.when(stopped).then(HARM).otherwise(0.0)).to_series()
    bad = t.filter(pl.col("label") != "healthy")
    coll = t.filter(pl.col("label") == "collapse")
    healthy = t.filter(pl.col("label") == "healthy")
    det = coll.filter(stopped)
    delay_ep = (det["stop_epoch"] - det["onset"]).median() if det.height else None
    delay_st = (det.select(stop_step - pl.col("onset_step"))).to_series().median() if det.height else None
    total, epochs = pl.col("total_steps"), pl.col("epochs")
    steps_used = pl.when(stopped).then(pl.min_horizontal(stop_step, total)).otherwise(total)
    epoch_end_probes = pl.when(stopped).then(pl.min_horizontal(EPOCH_ENDS, epochs)).otherwise(epochs)
    if end_probes is not None:
        epoch_end_probes = pl.col("n_end")
    probes_run = epoch_end_probes + pl.col("n_mid")
    used = t.select(steps_used).to_series()
    prone = t.filter(pl.col("method").is_in(SINGLE_STEP))
    used_prone = prone.select(steps_used).to_series()
    probe_cost = prone.select(probes_run * pl.col("probe_steps")).to_series().sum() if probe else 0.0
    net_prone = used_prone.sum() + probe_cost
    healthy_epochs = healthy["epochs"].sum()
    return {
        "collapses": f"{det.height}/{coll.height}",
        "in_window": f"{det.filter(IN_WINDOW).height}/{coll.height}",
        "recall_collapse": det.height / coll.height if coll.height else None,
        "bad_stopped": f"{bad.filter(stopped).height}/{bad.height}",
        "false_stops": f"{healthy.filter(stopped).height}/{healthy.height}",
        "median_delay_epochs": delay_ep,
        "median_delay_steps": delay_st,
        "saved_steps": 1 - used.sum() / t["total_steps"].sum(),
        "saved_steps_co_prone": 1 - used_prone.sum() / prone["total_steps"].sum() if prone.height else None,
        "saved_net_co_prone": 1 - net_prone / prone["total_steps"].sum() if prone.height else None,
        "harm_mean": harm.mean(),
        "harm_worst": harm.max(),
        "stopped_mid_epoch": f"{det.filter(mid).height}/{det.height}",
        "probes_per_healthy_epoch": (healthy.select(probes_run).to_series().sum() / healthy_epochs
                                     if probe and healthy_epochs else 0.0),
        "triggered_per_healthy_epoch": healthy["n_mid"].sum() / healthy_epochs if healthy_epochs else 0.0,
        "best_config_kept": best_kept(t),
    }


def best_kept(t: pl.DataFrame) -> str:
    """Groups (eps, n) whose best grid point by mean final val PGD is the same with and without stopping.

    A stopped trial's final val PGD is its last evaluated epoch's (the stop epoch)."""
    final = t.with_columns(
        full=pl.col("acc").list.last(),
        cut=pl.when(pl.col("stop_epoch").is_not_null()).then(pl.col("acc").list.get(pl.col("stop_epoch")))
        .otherwise(pl.col("acc").list.last()))
    g = final.group_by("eps", "n", "point").agg(pl.col("full").mean(), pl.col("cut").mean())
    groups = g.group_by("eps", "n").agg(full=pl.col("point").sort_by("full").last(),
                                        cut=pl.col("point").sort_by("cut").last(), points=pl.len())
    groups = groups.filter(pl.col("points") > 1)
    return f"{groups.filter(pl.col('full') == pl.col('cut')).height}/{groups.height}"


def ro_outcomes(lab: pl.DataFrame, stops: pl.DataFrame, window: int) -> pl.DataFrame:
    """`lab` with each trial's stop epoch (null: not stopped), its harm (the full run's best val PGD minus the
    best up to the stop, which best.pt keeps), epochs after its best, whether an RO trial was stopped no later
    than `window` epochs after its labelled onset, and the training steps it used."""
    stopped = pl.col("stop").is_not_null()
    return (lab.join(stops.select("trial", stop="epoch"), on="trial", how="left")
            .with_columns(harm=pl.when(stopped).then(pl.col("acc").list.max() - pl.col("acc").list.head(pl.col("stop") + 1).list.max()),
                          after_best=pl.col("stop") - (pl.col("onset") - 1),
                          in_window=stopped & (pl.col("label") == "robust_overfitting")
                          & (pl.col("stop") <= pl.col("onset") + window),
                          used=pl.when(stopped).then((pl.col("stop") + 1) * pl.col("steps_per_epoch"))
                          .otherwise(pl.col("total_steps"))))


def ro_score(lab: pl.DataFrame, stops: pl.DataFrame, window: int) -> dict:
    """The RO scoreboard row of one rule over the labelled trials `lab` (epoch-level stops)."""
    t = ro_outcomes(lab, stops, window)
    stopped = pl.col("stop").is_not_null()
    ro = t.filter(pl.col("label") == "robust_overfitting")
    healthy = t.filter(pl.col("label") == "healthy")
    hit = ro.filter(stopped)
    return {"ro_in_window": f"{ro['in_window'].sum()}/{ro.height}",
            "ro_stopped": f"{hit.height}/{ro.height}",
            "false_stops": f"{healthy.filter(stopped).height}/{healthy.height}",
            "median_epochs_after_best": hit["after_best"].median(),
            "harm_mean_stopped": t.filter(stopped)["harm"].mean(), "harm_worst": t["harm"].max(),
            "saved_steps": 1 - t["used"].sum() / t["total_steps"].sum() if t.height else None}


# `ro`'s defaults from its first freeze (commit 73ce198) until the label-noise segment's dev split re-chose them
FIRST_RO_FREEZE = {"patience": None, "gap_rise": 5.0, "energy": "gap", "fall_z": None}
# from that re-choice (1e9e188) until the val-fall condition joined the candidates (session 17)
SECOND_RO_FREEZE = {"patience": None, "gap_rise": 12.0, "energy": "held_out", "fall_z": None}


def ro_board(c: dict[str, pl.DataFrame], events: pl.DataFrame, lab: pl.DataFrame, dev: pl.DataFrame,
             dev_epochs: pl.DataFrame) -> pl.DataFrame:
    """The RO segment's scoreboard: the oracle, `ro` with its defaults, the default stop_on (from `events`,
    detect() on `c`), and Rice et al.'s rule and the energy-only rule with their settings chosen on `dev`
    (every segment's dev trials, whose epochs are `dev_epochs`: choose_ro.py's rule)."""
    import choose_ro
    from analysis.detectors import ro

    rows = [choose_ro.evaluate(dev_epochs, dev, *cand) for cand in choose_ro.candidates()]
    rice = choose_ro.choose(choose_ro.rice_pool(rows))
    energy = choose_ro.choose(choose_ro.energy_pool(rows))
    rules = {
        "oracle: stop at the labelled onset (the epoch after the best)": oracle(lab),
        "ro (its defaults)": _first(ro(c["epochs"])),
        "ro as first frozen (73ce198: the gap alone at 5x)": _first(ro(c["epochs"], **FIRST_RO_FREEZE)),
        "ro as second frozen (1e9e188: the held-out drop alone at 12x)": _first(ro(c["epochs"], **SECOND_RO_FREEZE)),
        f"default stop_on ({', '.join(DEFAULT_STOP_ON)})": _first(events.filter(pl.col("kind").is_in(DEFAULT_STOP_ON))),
        "co_pgd_probe alone": _first(events.filter(pl.col("kind") == "co_pgd_probe")),
        f"baseline: Rice et al., val PGD not improved for {rice['patience']} epochs after the decay (from dev)":
            _first(ro(c["epochs"], patience=rice["patience"], gap_rise=None, fall_z=None)),
        f"energy only: {energy['energy']} signal up {energy['gap_rise']:g} x its pre-decay noise (from dev)":
            _first(ro(c["epochs"], patience=None, gap_rise=energy["gap_rise"], energy=energy["energy"], fall_z=None)),
    }
    return pl.DataFrame([{"rule": name} | ro_score(lab, stops, choose_ro.RO_WINDOW) for name, stops in rules.items()])


def select(lab: pl.DataFrame, split: str, seeds: tuple[int, ...] | None = None) -> pl.DataFrame:
    """`lab`'s trials of `split` ('all': every split), only those of `seeds` if given; LookupError if none."""
    lab = lab if split == "all" else lab.filter(pl.col("split") == split)
    lab = lab if seeds is None else lab.filter(pl.col("seed").is_in(seeds))
    if lab.is_empty():
        raise LookupError(f"no trial of split {split}" + ("" if seeds is None else f" has a seed in {seeds}")
                          + "; `corpus.py list` shows the grid")
    return lab


def scoreboard(split: str = "test", corpus: Path = CORPUS, segment: str = "co",
               seeds: tuple[int, ...] | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(labels of the split's trials of `segment`, only `seeds` if given; one scoreboard row per rule; each
    trial's stop under the default rule, default_stops())."""
    c = load(corpus)
    lab = labels(c)
    dev_all = lab.filter(pl.col("split") == "dev")
    dev_epochs = c["epochs"].filter(pl.col("trial").is_in(dev_all["trial"].to_list()))
    lab = lab.filter(pl.col("segment") == segment)
    if segment in RO_SEGMENTS:
        lab = select(lab, split, seeds)
        c = {k: v.filter(pl.col("trial").is_in(lab["trial"].to_list())) for k, v in c.items()}
        events = detect(c["batches"], c["epochs"], c["probes"])
        return lab, ro_board(c, events, lab, dev_all, dev_epochs), default_stops(lab, events, segment)
    c = {k: v.filter(pl.col("trial").is_in(lab["trial"].to_list())) for k, v in c.items()}
    shifts = epoch_shifts(c["batches"])  # per trial: one pass serves the dev thresholds and the split's rules
    dev = lab.filter(pl.col("split") == "dev")
    free = {signal: dev_threshold(shifts, dev, signal) for signal in FREE_SIGNALS}  # chosen on dev only
    trigger_h = dev_trigger_h(c["batches"], dev)
    lab = select(lab, split, seeds)
    keep = lab["trial"].to_list()
    c = {k: v.filter(pl.col("trial").is_in(keep)) for k, v in c.items()}
    events, gated_epochs = detect(c["batches"], c["epochs"], c["probes"]), gated(c["epochs"])
    rules = all_rules(c, events, gated_epochs, lab, shifts.filter(pl.col("trial").is_in(keep)), free, trigger_h)
    mid = mid_epoch_probes(c["epochs"])
    ends = gated_epochs.filter((pl.col("split") == "probe") & pl.col("train_loss").is_not_null()).select("trial", "epoch")
    rows = [{"rule": name, "reads_probe": probe != NONE, "probes": probe}
            | score(lab, stops, probe != NONE, mid if probe in (TRIGGER, GATED) else None, ends if probe == GATED else None)
            for name, (stops, probe) in rules.items()]
    return lab, pl.DataFrame(rows), default_stops(lab, events, segment)


def default_stops(lab: pl.DataFrame, events: pl.DataFrame, segment: str = "co") -> pl.DataFrame:
    """Per labelled trial of `lab`: where the default stop rule stops it (the epoch; the step when mid-epoch, at
    a probe the trigger ran; from `events`, detect() on its trials), whether that is in the window, the best val
    PGD it loses, and the event's evidence. The window of a collapse is [onset - 2, onset + 1]; of an RO
    trial (`segment` ro or ro_noise), no later than choose_ro.RO_WINDOW epochs after its onset."""
    first = (events.filter(pl.col("kind").is_in(DEFAULT_STOP_ON)).sort("epoch", "step", nulls_last=True)
             .group_by("trial").first()  # as _first, with its evidence
             .select("trial", "evidence", stop_epoch="epoch",
                     stop_step=pl.when(pl.col("kind") == "co_pgd_probe").then(pl.col("step")).cast(pl.Int64)))
    evidence = pl.col("evidence").str.slice(0, 90)
    if segment in RO_SEGMENTS:
        import choose_ro
        t = ro_outcomes(lab, first.select("trial", epoch="stop_epoch"), choose_ro.RO_WINDOW)
        return t.join(first.select("trial", "evidence"), on="trial", how="left").select(
            "trial", "label", best=pl.col("onset") - 1, stop_epoch="stop", after_best="after_best",
            in_window=pl.when(pl.col("label") == "robust_overfitting").then("in_window"),
            harm=pl.col("harm").round(3), evidence=evidence).sort("label", "trial")
    return lab.join(first, on="trial", how="left").select(
        "trial", "label", "onset", "stop_epoch", "stop_step",
        in_window=pl.when(pl.col("label") == "collapse").then(IN_WINDOW.fill_null(False)),
        harm=pl.when(STOPPED).then(HARM).round(3),
        evidence=evidence,
    ).sort("label", "trial")


def markdown(board: pl.DataFrame) -> str:
    cols = board.columns
    fmt = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in board.iter_rows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["test", "dev", "outside", "all"])
    ap.add_argument("--seeds", type=seed_list, default=None, help="only these seeds of the split, comma-separated "
                                                                  "(e.g. 12: the test trials trained with the trigger live)")
    ap.add_argument("--segment", default="co", choices=["co", *RO_SEGMENTS],
                    help="co: the single-step corpus and its outside split; ro: the robust-overfitting segment; "
                         "ro_noise: its label-noise twin")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--format", default="md", choices=["md", "json"])
    ap.add_argument("--stops", action="store_true", help="also each trial's stop under the default rule")
    a = ap.parse_args(argv)
    try:
        lab, board, stops = scoreboard(a.split, Path(a.corpus), a.segment, a.seeds)
    except LookupError as e:
        ap.error(str(e))
    if a.format == "json":
        print(json.dumps({"labels": lab.drop("acc").to_dicts(), "scoreboard": board.to_dicts()}, default=str))
        return 0
    counts = lab.group_by("label").len().sort("label")
    print(f"segment {a.segment}, split {a.split}{'' if a.seeds is None else ', seeds ' + ','.join(map(str, a.seeds))}: {lab.height} trials; " + ", ".join(f"{r[0]} {r[1]}" for r in counts.iter_rows()))
    print(markdown(board))
    if a.stops:
        print(f"\ndefault stop_on ({', '.join(DEFAULT_STOP_ON)}), each trial:")
        print(markdown(stops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
