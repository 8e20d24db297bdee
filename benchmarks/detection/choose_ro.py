"""Choose the `ro` detector's settings on the dev split (issue 24; docs/detection.md, "Robust overfitting").

    python benchmarks/detection/choose_ro.py [--corpus DIR]

Written, with its candidates and its rule, before any trial of the RO segment was labelled or scored.
`ro` looks only after the lr's first decay and fires where its set conditions hold: `patience`,
val PGD has not beaten its best since the decay for that many epochs (Rice et al.'s rule), and
`gap_rise`, the energy signal rose that many times its pre-decay noise, the signal being the
train - val dE(x,y) gap or (`energy` held_out, added 2026-12-06 before the dev split was read, from
pilot m and its 2,000-image twin: the held-out drop drifted there, the gap did not separate them)
-dE(x,y) of val alone (analysis/detectors.py). Candidates: PATIENCE x GAP_RISE x ENERGY but the
pairs without any condition. Since 2026-12-07 (session 17), before the trials that score it ran, also `fall_z`:
val PGD's FALL_EPOCHS-epoch mean that many standard errors below its best since the decay (the val split's
sampling error), alone or with the energy condition, FALL_Z x FALL_EPOCHS x (no energy condition, GAP_RISE x
ENERGY). Added because every earlier candidate stops a plateau as readily as a fall (patience) or fires late
and rarely (energy), and step 4 below because, with no candidate in the window, the rule picked the one that
stops RO least (2 of 14 dev RO trials).

The rule, on the dev split (every segment: a false stop on a single-step trial counts too; the RO trials
counted are the RO segments', since 2026-12-06 session 14: before, the single-step dev trials labelled RO were in
the denominators, which `ro` cannot stop without a decay, so the ranking is the same; since 2026-12-07 session 16,
before any of its trials finished, both RO segments' trials: `ro` and the label-noise `ro_noise`):
  1. fewest false stops (trials labelled healthy that the rule stops);
  2. among those, the rules whose mean harm on the dev trials it stops is <= 0.01 of val PGD, if any;
  3. the most RO trials stopped no later than 3 epochs after their best epoch (onset + 2);
  4. the most RO trials stopped at all (added 2026-12-07, session 17);
  5. then the lower mean harm, the fewer conditions, the smaller patience, the smaller gap_rise, the larger
     fall_z, the fewer fall_epochs.
Harm: the best val PGD of the full run minus the best the trial kept up to its stop (its best
checkpoint). Rice et al.'s baseline is chosen by the same rule among the patience-only candidates,
the energy-only rule among the gap-only ones, the val-fall rule among the fall-only ones.
"""
from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from analysis.detectors import ro  # noqa: E402
from corpus import RO_SEGMENTS  # noqa: E402
from scoreboard import CORPUS, labels, load, ro_outcomes  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

PATIENCE = (None, 2, 3, 5, 10, 20)
GAP_RISE = (None, 2.0, 3.0, 5.0, 8.0, 12.0)
ENERGY = ("gap", "held_out")
FALL_Z = (2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
FALL_EPOCHS = (1, 2, 3)
RO_WINDOW = 2  # epochs after the labelled onset (the epoch after the best): best + 3
HARM_LIMIT = 0.01


Candidate = tuple[int | None, float | None, str, float | None, int]


def candidates() -> list[Candidate]:
    """(patience, gap_rise, energy, fall_z, fall_epochs); a candidate without gap_rise once (its energy is unused),
    one without fall_z once (its fall_epochs is unused)."""
    old = [(p, g, e, None, FALL_EPOCHS[-1]) for p in PATIENCE for g in GAP_RISE for e in ENERGY
           if g is not None or (p is not None and e == ENERGY[0])]
    fall = [(None, g, e, z, k) for g in GAP_RISE for e in ENERGY for z in FALL_Z for k in FALL_EPOCHS
            if g is not None or e == ENERGY[0]]
    return old + fall


def evaluate(epochs: pl.DataFrame, lab: pl.DataFrame, patience: int | None, gap_rise: float | None,
             energy: str = "gap", fall_z: float | None = None, fall_epochs: int = FALL_EPOCHS[-1]) -> dict:
    """One candidate's figures on the trials of `lab`."""
    stops = ro(epochs, patience=patience, gap_rise=gap_rise, energy=energy, fall_z=fall_z, fall_epochs=fall_epochs)
    t = ro_outcomes(lab, stops, RO_WINDOW)
    stopped = t.filter(pl.col("stop").is_not_null())
    # `ro` looks only after an lr decay: the single-step trials labelled RO (no decay) are not its to count
    ro_trials = t.filter((pl.col("label") == "robust_overfitting") & pl.col("segment").is_in(RO_SEGMENTS))
    return {"patience": patience, "gap_rise": gap_rise, "energy": energy if gap_rise is not None else None,
            "fall_z": fall_z, "fall_epochs": fall_epochs if fall_z is not None else None,
            "false_stops": stopped.filter(pl.col("label") == "healthy").height,
            "ro_in_window": ro_trials["in_window"].sum(),
            "ro_stopped": ro_trials.filter(pl.col("stop").is_not_null()).height, "ro_trials": ro_trials.height,
            "harm_mean": stopped["harm"].mean() or 0.0, "harm_worst": t["harm"].max() or 0.0}


def choose(rows: list[dict]) -> dict:
    """The module docstring's rule."""
    fewest = min(r["false_stops"] for r in rows)
    pool = [r for r in rows if r["false_stops"] == fewest]
    pool = [r for r in pool if r["harm_mean"] <= HARM_LIMIT] or pool
    return min(pool, key=lambda r: (-r["ro_in_window"], -r["ro_stopped"], r["harm_mean"],
                                    (r["patience"] is not None) + (r["gap_rise"] is not None)
                                    + (r["fall_z"] is not None),
                                    r["patience"] or 0, r["gap_rise"] or 0.0, -(r["fall_z"] or 0.0),
                                    r["fall_epochs"] or 0))


def rice_pool(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["gap_rise"] is None and r["fall_z"] is None]


def energy_pool(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["patience"] is None and r["fall_z"] is None]


def fall_pool(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["patience"] is None and r["gap_rise"] is None]


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    a = ap.parse_args(argv)
    c = load(Path(a.corpus))
    lab = labels(c).filter(pl.col("split") == "dev")
    epochs = c["epochs"].filter(pl.col("trial").is_in(lab["trial"].to_list()))
    rows = [evaluate(epochs, lab, *cand) for cand in candidates()]
    print(pl.DataFrame(rows).sort("false_stops", "ro_in_window", descending=[False, True]))
    for name, pool in [("ro (any)", rows), ("Rice et al. (patience only)", rice_pool(rows)),
                       ("energy only (gap only)", energy_pool(rows)), ("val fall only", fall_pool(rows))]:
        best = choose(pool)
        print(f"{name}: patience={best['patience']} gap_rise={best['gap_rise']} energy={best['energy']} "
              f"fall_z={best['fall_z']} fall_epochs={best['fall_epochs']} -> "
              f"false stops {best['false_stops']}, "
              f"RO in window {best['ro_in_window']}/{best['ro_trials']}, stopped {best['ro_stopped']}, "
              f"mean harm {best['harm_mean']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
