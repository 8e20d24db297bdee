"""Choose the energy trigger's signals, k and h on the dev split only (test is never read here).

    python benchmarks/detection/choose_trigger.py [--corpus DIR]
    python benchmarks/detection/choose_trigger.py --score test|outside [--seeds 3,4,5]   # the shipped setting, replayed there
    python benchmarks/detection/choose_trigger.py --headroom [--split dev]   # what any threshold on these signals can do

Replays the trigger (workloads/telemetry/trigger.py, through analysis.detectors.trigger) over the
dev trials' training streams for each setting and counts, by a rule fixed before looking:

- `probes_per_healthy_epoch`: fires per epoch on healthy trials (each fire costs at most one probe: the trial
  probes once at the flush after its fires, so fires before the same flush share it);
- `in_onset_epoch`: collapsed trials with a fire inside their labelled collapse epoch (the steps where a
  probe can already see the fall and stop the trial before the epoch's end);
- `median_fire_epochs`: of those, the median fire step after the onset, in epochs.

The choice: at most 0.5 probes per healthy epoch (the issue's cost bound), then the most collapses
fired in their onset epoch, then the fewest healthy probes. The corpus has no mid-epoch probes, so
whether the probe confirms at the fire is measured on the trials that trained live (the `outside` split,
test seed 12).

The choice reads the single-step trials (segment `co`) only: it was made before the RO segment existed,
and the segment's long multi-step runs are no collapse candidates. `--score` replays the shipped setting
on another split, per segment: on the multi-step segment only the healthy-probe rate means anything.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from corpus import seed_list  # noqa: E402
from scoreboard import CORPUS, labels, load, markdown, select  # noqa: E402

from analysis.detectors import MAD_TO_SD, ordered_batches, trigger  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.telemetry import trigger as defaults  # noqa: E402

SIGNAL_SETS = {"de_y": {"de_y": 0}, "de_y+de_std": {"de_y": 0, "de_std": 1},
               "de_y+acc_adv": {"de_y": 0, "acc_adv": 1}, "de+de_y+de_std+acc_adv": {"de": 0, "de_y": 0, "de_std": 1,
                                                                                    "acc_adv": 1}}
GRID = {"k": (0.5, 1.0, 2.0), "h": (10.0, 20.0, 40.0)}
MAX_HEALTHY_RATE = 0.5


def fires_table(lab: pl.DataFrame, fires: pl.DataFrame) -> dict:
    """The rule's counts for one setting's fires over the labelled trials `lab`."""
    t = fires.join(lab.select("trial", "label", "onset_step", "steps_per_epoch", "epochs"), on="trial")
    healthy = lab.filter(pl.col("label") == "healthy")
    rate = (t.filter(pl.col("label") == "healthy").height / healthy["epochs"].sum()) if healthy.height else None
    inside = (t.filter((pl.col("label") == "collapse") & (pl.col("step") >= pl.col("onset_step"))
                       & (pl.col("step") < pl.col("onset_step") + pl.col("steps_per_epoch")))
              .group_by("trial").agg(after=((pl.col("step") - pl.col("onset_step")) / pl.col("steps_per_epoch")).min()))
    n = lab.filter(pl.col("label") == "collapse").height
    return {"probes_per_healthy_epoch": rate, "in_onset_epoch": inside.height, "collapses": n,
            "median_fire_epochs": inside["after"].median()}


def _streams(c: dict[str, pl.DataFrame], lab: pl.DataFrame) -> pl.DataFrame:
    return ordered_batches(c["batches"].filter(pl.col("trial").is_in(lab["trial"].to_list())),
                           ["trial", "epoch", "step", "de", "de_y", "de_std", "acc_adv"])


def grid(corpus: Path = CORPUS) -> pl.DataFrame:
    c = load(corpus)
    lab = labels(c).filter((pl.col("split") == "dev") & (pl.col("segment") == "co"))
    batches = _streams(c, lab)
    rows = []
    for (name, signals), (k, h) in itertools.product(SIGNAL_SETS.items(), itertools.product(*GRID.values())):
        fires = trigger(batches, signals=signals, k=k, h=h)
        rows.append({"signals": name, "k": k, "h": h} | fires_table(lab, fires))
    return pl.DataFrame(rows)


def choose(table: pl.DataFrame) -> dict:
    ok = table.filter(pl.col("probes_per_healthy_epoch") <= MAX_HEALTHY_RATE)
    return ok.sort(["in_onset_epoch", "probes_per_healthy_epoch"], descending=[True, False]).row(0, named=True)


def score(split: str, corpus: Path = CORPUS, seeds: tuple[int, ...] | None = None) -> pl.DataFrame:
    """The shipped trigger replayed on `split`'s trials (only `seeds`, if given), one row per segment."""
    c = load(corpus)
    lab = select(labels(c), split, seeds)
    fires = trigger(_streams(c, lab))
    return pl.DataFrame([{"split": split, "segment": seg, "trials": part.height}
                         | fires_table(part, fires.filter(pl.col("trial").is_in(part["trial"].to_list())))
                         for (seg,), part in lab.sort("segment").group_by("segment", maintain_order=True)])


SMOOTH = 20  # steps averaged in --headroom
QUANTILES = (0.5, 0.75, 0.9, 0.95)


def epoch_peaks(batches: pl.DataFrame, signals: dict[str, int] = defaults.TRIGGER_SIGNALS) -> pl.DataFrame:
    """Per trial and epoch (from the second): the largest z of a SMOOTH-step mean of any trigger signal (on its
    side), in the trigger's units (Trigger._roll): against the median and robust sd of the second half of the
    previous epoch's values, when it has MIN_VALUES of them; scaled by sqrt(SMOOTH) so that a mean of SMOOTH noise
    steps has sd 1."""
    peaks = []
    for signal, side in signals.items():
        x = pl.col(signal).cast(pl.Float64)
        values = (batches.filter(x.is_finite()).sort("trial", "step")
                  .with_columns(_i=pl.int_range(pl.len()).over("trial", "epoch"), _n=pl.len().over("trial", "epoch")))
        ref = (values.filter(pl.col("_i") >= pl.col("_n") // 2)
               .group_by("trial", "epoch").agg(med=x.median(), mad=(x - x.median()).abs().median(), k=pl.len())
               .filter(pl.col("k") >= defaults.MIN_VALUES)
               .with_columns(epoch=pl.col("epoch") + 1, sd=MAD_TO_SD * pl.col("mad")))
        z = ((x - pl.col("med")) / pl.max_horizontal("sd", pl.lit(1e-12))).rolling_mean(SMOOTH).over("trial", "epoch")
        moved = (z if side > 0 else -z if side < 0 else z.abs()) * SMOOTH ** 0.5
        peaks.append(values.join(ref, on=["trial", "epoch"]).sort("trial", "step")
                     .select("trial", "epoch", peak=moved).group_by("trial", "epoch").agg(pl.col("peak").max()))
    return (pl.concat(peaks).group_by("trial", "epoch").agg(pl.col("peak").max())
            .with_columns(pl.col("trial").cast(pl.String)))


def headroom(split: str = "dev", corpus: Path = CORPUS) -> pl.DataFrame:
    """How many collapses' onset epochs peak above a share of the healthy trials' epochs: the most a trigger
    on these signals could fire inside the collapse epoch while firing in that share of healthy epochs."""
    c = load(corpus)
    lab = select(labels(c).filter(pl.col("segment") == "co"), split, None)
    peaks = epoch_peaks(_streams(c, lab)).join(lab.select("trial", "label", "onset"), on="trial")
    healthy = peaks.filter(pl.col("label") == "healthy")["peak"]
    onsets = peaks.filter((pl.col("label") == "collapse") & (pl.col("epoch") == pl.col("onset")))["peak"]
    collapses = lab.filter(pl.col("label") == "collapse").height
    return pl.DataFrame([{"healthy epochs above": f"{1 - q:.0%}", "peak z": healthy.quantile(q),
                          "collapse epochs above it": f"{(onsets > healthy.quantile(q)).sum()}/{collapses}"}
                         for q in QUANTILES])


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--score", choices=["dev", "test", "outside"], default=None,
                    help="replay the shipped setting on this split instead of choosing")
    ap.add_argument("--seeds", type=seed_list, default=None,
                    help="with --score: only these seeds of the split, comma-separated")
    ap.add_argument("--headroom", action="store_true", help="onset epochs against healthy epochs, threshold-free")
    ap.add_argument("--split", choices=["dev", "test", "outside"], default="dev", help="with --headroom")
    a = ap.parse_args(argv)
    if a.headroom:
        print(markdown(headroom(a.split, Path(a.corpus))))
        return 0
    if a.score:
        try:
            print(markdown(score(a.score, Path(a.corpus), a.seeds)))
        except LookupError as e:
            ap.error(str(e))
        return 0
    table = grid(Path(a.corpus))
    print(markdown(table))
    best = choose(table)
    print(f"\nchoice: {best}")
    shipped = {"signals": next((n for n, s in SIGNAL_SETS.items() if s == defaults.TRIGGER_SIGNALS), None),
               "k": defaults.K, "h": defaults.H}
    same = all(best[k] == v for k, v in shipped.items())
    print(f"workloads/telemetry/trigger.py defaults {shipped}: {'the choice' if same else 'NOT the choice'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
