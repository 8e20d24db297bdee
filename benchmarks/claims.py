"""Claims table: published claims of the papers behind energy-at, checked on the detection corpus.

    python benchmarks/claims.py [--corpus DIR] [--format md|json]

Reads only the committed detection corpus (benchmarks/detection/corpus/*.parquet, made by
benchmarks/detection/corpus.py; no training), so it runs in seconds on whatever trials the corpus
holds. For every claim it lists our setting, our result over every seed the corpus has (mean +- sd
of the final and the best val PGD accuracy, the collapse rate by the corpus's own labels
`scoreboard.labels`, the number of seeds) and a verdict by the rules below, which were written
down before the numbers were looked at (docs/claims.md).

Verdict rules:
- CO claims (method M "avoids / reduces catastrophic overfitting" against a comparison C):
  `co_verdict`. Not testable here when M or C has fewer than MIN_SEEDS seeds in the corpus, or
  when C collapses in none of its seeds (the failure M is said to avoid does not happen in this
  setting). Reproduced when M's collapse rate is lower than C's AND M's mean final val PGD
  accuracy exceeds C's by more than the larger of their two seed sds. Not reproduced otherwise.
- The dE claim (PGD-AT's dE(x) drifts negative late in training, TRADES stays near 0):
  `energy_verdict`, per source (probe split, training batches). drift = mean dE(x) of the last
  two epochs minus dE(x) of epoch 0, per seed. Not testable here with fewer than MIN_SEEDS seeds
  on either side. Reproduced when PGD-AT's mean drift is below 0 AND below TRADES's mean drift
  by more than the larger of their two drift sds AND TRADES's late dE(x) is closer to 0 than
  PGD-AT's (|mean| smaller). Not reproduced otherwise.
- The RO claims (6-8), on the RO segment's test seeds (`robust_overfitting`; docs/claims.md states them):
  RO gap = best minus final val PGD per trial. 6: PGD-AT is labelled robust overfitting in at least
  two thirds of its trials. 7: a method's mean RO gap below PGD-AT's by more than the larger sd
  (above by more: contradicted). 8: Spearman correlation of the final epoch's mean |dE(x)| of the
  training batches and the RO gap over the three methods' trials, 95% bootstrap interval above 0.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from statistics import mean, stdev

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "detection"))
sys.path.insert(0, str(HERE.parent))

import scoreboard  # noqa: E402
from corpus import COMMON, GRID, GRIDS, LARGE  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

CORPUS = scoreboard.CORPUS
MIN_SEEDS = 2  # an sd needs two seeds
COMMAND = "python benchmarks/claims.py"

SOURCES = {
    "DER": "Mirza, Briglia, Bartolucci, Beadini, Lisanti, Masi: Understanding Adversarial Training with "
           "Energy-based Models",
    "N-FGSM": "de Jorge et al.: Make Some Noise: Reliable and Efficient Single-Step Adversarial Training "
              "(NeurIPS 2022)",
    "RS-FGSM": "Wong, Rice, Kolter: Fast is Better than Free: Revisiting Adversarial Training (ICLR 2020)",
    "WEAT": "Mirza et al.: Shedding More Light on Robust Classifiers under the lens of Energy-based Models "
            "(ECCV 2024)",
    "JEAT": "Zhu, Ma, Sun, Chen, Jiang, Li: Towards Understanding the Generative Capability of "
            "Adversarially Robust Classifiers",
}

CLAIMS = {
    "1": ("DER's energy regulariser reduces catastrophic overfitting against its single-step base", "DER"),
    "2": ("N-FGSM (noise 2 eps, no projection) avoids the CO that FGSM hits", "N-FGSM"),
    "3": ("RS-FGSM with alpha 1.25 eps avoids CO at moderate eps where FGSM fails", "RS-FGSM"),
    "4": ("PGD-AT's training-set dE(x) drifts negative late in training; TRADES keeps it near 0", "WEAT"),
}

# (claim, method's grid point, comparison's grid point, note). "{der_base}" is DER's `method.base`
# as the corpus's trials record it. Val PGD is measured at each trial's own eps, so where the eps
# differ the two accuracies are under different attacks.
COMPARISONS: list[tuple[str, str, str, str]] = [
    ("1", "der-e0.30-n20k", "{der_base}-e0.30-n20k", "DER against its base (method.base)"),
    ("1", "der-e0.30-n20k", "fgsm-e0.30-n20k", "shown too: FGSM at the same eps and size"),
    ("2", "n_fgsm-e0.25-n20k", "fgsm-e0.30-n20k", "eps differ: 0.25 vs 0.30 (the corpus has no FGSM at 0.25 on 20k)"),
    ("2", "n_fgsm-e0.35-n20k", "fgsm-e0.30-n20k", "eps differ: 0.35 vs 0.30 (N-FGSM at the larger eps)"),
    ("2", "n_fgsm-e0.25-n20k", "fgsm-e0.20-n20k", "eps differ: 0.25 vs 0.20 (FGSM at the smaller eps)"),
    ("3", "rs_fgsm-e0.20-n20k", "fgsm-e0.20-n20k", ""),
    ("3", "rs_fgsm-e0.30-n20k", "fgsm-e0.30-n20k", ""),
    ("3", "rs_fgsm-e0.30-n20k-cyclic", "fgsm-e0.30-n20k-cyclic", "Wong et al.'s cyclic lr (peak 0.1)"),
    ("3", "rs_fgsm-e0.30-n5k", "fgsm-e0.25-n5k", "eps differ: 0.30 vs 0.25 (the corpus's only FGSM on 5k)"),
]
ENERGY_POINTS = ("pgd3-e0.30-n20k", "trades3-e0.20-n20k")  # claim 4: eps differ (0.30 vs 0.20)
RO_CLAIMS = {
    "6": ("PGD-AT overfits robustly after the lr decay", "Rice et al."),
    "7": ("TRADES and WEAT-ADV overfit robustly less than PGD-AT", "TRADES, WEAT"),
    "8": ("Energy alignment goes with less robust overfitting: final mean abs dE(x) of training batches vs RO gap", "WEAT"),
}
# per RO segment (corpus.py): its three methods' points. `ro_noise`'s (40% label noise) were added with the
# segment, before any of its trials ran; the claims' rules are the same
RO_POINTS = {seg: {m: f"{m}5-e0.10-n500{tail}" for m in ("pgd", "trades", "weat_adv")}
             for seg, tail in (("ro", ""), ("ro_noise", "-noise0.4"))}
assert all(set(p.values()) <= {name for name, _ in GRIDS[seg]} for seg, p in RO_POINTS.items())
BOOTSTRAP = 2000


# ----------------------------------------------------------------- verdict rules (fixed before the numbers)


def co_verdict(m: dict | None, c: dict | None, min_seeds: int = MIN_SEEDS) -> tuple[str, str]:
    """(verdict, reason) of a CO claim: method `m` vs comparison `c`, each a dict with n,
    collapse_rate, final_mean, final_sd (the module docstring states the rule)."""
    if m is None or c is None or m["n"] < min_seeds or c["n"] < min_seeds:
        have = f"{0 if m is None else m['n']} vs {0 if c is None else c['n']}"
        return "not testable here", f"fewer than {min_seeds} seeds ({have})"
    if c["collapse_rate"] == 0:
        return "not testable here", "the comparison collapses in none of its seeds"
    margin = max(_sd(m["final_sd"]), _sd(c["final_sd"]))
    gap = m["final_mean"] - c["final_mean"]
    lower = m["collapse_rate"] < c["collapse_rate"]
    why = (f"collapse rate {m['collapse_rate']:.2f} vs {c['collapse_rate']:.2f} ({'lower' if lower else 'not lower'}); "
           f"final val PGD gap {gap:+.3f}, needs > {margin:.3f} ({'met' if gap > margin else 'not met'})")
    return ("reproduced" if lower and gap > margin else "not reproduced"), why


def energy_verdict(pgd: dict | None, trades: dict | None, min_seeds: int = MIN_SEEDS) -> tuple[str, str]:
    """(verdict, reason) of the dE claim for one source: dicts with n, drift_mean, drift_sd,
    late_mean (mean dE(x) of the last two epochs)."""
    if pgd is None or trades is None or pgd["n"] < min_seeds or trades["n"] < min_seeds:
        have = f"{0 if pgd is None else pgd['n']} vs {0 if trades is None else trades['n']}"
        return "not testable here", f"fewer than {min_seeds} seeds ({have})"
    margin = max(_sd(pgd["drift_sd"]), _sd(trades["drift_sd"]))
    negative = pgd["drift_mean"] < 0
    apart = pgd["drift_mean"] < trades["drift_mean"] - margin
    nearer = abs(trades["late_mean"]) < abs(pgd["late_mean"])
    why = (f"PGD-AT drift {pgd['drift_mean']:+.3f} ({'< 0' if negative else 'not < 0'}); "
           f"PGD-AT minus TRADES drift {pgd['drift_mean'] - trades['drift_mean']:+.3f}, needs < {-margin:.3f} "
           f"({'met' if apart else 'not met'}); late |dE| TRADES {abs(trades['late_mean']):.3f} vs "
           f"PGD-AT {abs(pgd['late_mean']):.3f} ({'nearer 0' if nearer else 'not nearer 0'})")
    return ("reproduced" if negative and apart and nearer else "not reproduced"), why


def ro_share_verdict(labels: list[str], min_seeds: int = MIN_SEEDS) -> tuple[str, str]:
    """Claim 6 from the PGD-AT point's labels."""
    if len(labels) < min_seeds:
        return "not testable here", f"fewer than {min_seeds} seeds ({len(labels)})"
    k = labels.count("robust_overfitting")
    ok = 3 * k >= 2 * len(labels)
    return ("reproduced" if ok else "not reproduced"), f"{k} of {len(labels)} trials labelled robust overfitting (needs 2/3)"


def ro_gap_verdict(method: list[float], pgd: list[float], pgd_overfits: bool,
                   min_seeds: int = MIN_SEEDS) -> tuple[str, str]:
    """Claim 7 for one method: its RO gaps against PGD-AT's."""
    if not pgd_overfits:
        return "not testable here", "claim 6 does not hold here: no robust overfitting to reduce"
    if len(method) < min_seeds or len(pgd) < min_seeds:
        return "not testable here", f"fewer than {min_seeds} seeds ({len(method)} vs {len(pgd)})"
    margin, diff = max(stdev(method), stdev(pgd)), mean(method) - mean(pgd)
    why = f"mean RO gap {mean(method):.3f} vs PGD-AT {mean(pgd):.3f} (difference {diff:+.3f}, margin {margin:.3f})"
    return ("reproduced" if diff < -margin else "contradicted" if diff > margin else "not reproduced"), why


def spearman_verdict(x: list[float], y: list[float], pgd_overfits: bool, seed: int = 0) -> tuple[str, str]:
    """Claim 8: Spearman correlation of x and y with a 95% bootstrap interval over the pairs."""
    import numpy as np

    if not pgd_overfits:
        return "not testable here", "claim 6 does not hold here: no robust overfitting to reduce"
    if len(x) < 4:
        return "not testable here", f"{len(x)} trials (needs 4)"

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        ra, rb = a.argsort().argsort(), b.argsort().argsort()  # ranks (ties are rare with float gaps)
        return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() and rb.std() else 0.0

    a, b = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(a), (BOOTSTRAP, len(a)))
    boots = np.array([rho(a[i], b[i]) for i in idx])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    r = rho(a, b)
    return ("reproduced" if r > 0 and lo > 0 else "not reproduced"), f"Spearman {r:+.2f}, 95% interval [{lo:+.2f}, {hi:+.2f}], {len(a)} trials"


def _sd(v: float | None) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v


# ----------------------------------------------------------------- the corpus's numbers


def points(c: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per grid point in the corpus: setting, seeds, final / best val PGD, collapse rate, labels."""
    lab = scoreboard.labels(c).join(
        c["trials"].select("trial", lr=pl.col("optim.lr"), base=pl.col("method.base"), beta=pl.col("method.beta"),
                          gamma=pl.col("method.gamma"), steps=pl.col("attack.steps")),
        on="trial")
    lab = lab.with_columns(final=pl.col("acc").list.last(), best=pl.col("acc").list.max())
    counts = (lab.group_by("point", "label").len().sort("len", "label", descending=[True, False])
              .group_by("point", maintain_order=True).agg(labels=pl.format("{} {}", "label", "len")))
    return (lab.group_by("point")
            .agg(pl.col("method", "eps", "n", "epochs", "schedule", "lr", "base", "beta", "gamma", "steps").first(),
                 seeds=pl.col("seed").sort(),
                 n_seeds=pl.len(),
                 final_mean=pl.col("final").mean(), final_sd=pl.col("final").std(),
                 best_mean=pl.col("best").mean(), best_sd=pl.col("best").std(),
                 collapse_rate=(pl.col("label") == "collapse").mean())
            .join(counts, on="point").sort("point"))


def setting(p: dict) -> str:
    method = p["method"]
    if method == "der":  # the corpus's configs skip Hydra: beta is the dataclass default (6), not der.yaml's 1
        method = f"der (base {p['base']}, beta {p['beta']:g}, gamma {p['gamma']:g})"
    elif method == "trades":
        method = f"trades-{p['steps']} (beta {p['beta']:g})"
    elif method == "pgd":
        method = f"pgd-{p['steps']}"
    sched = p["schedule"] if p["schedule"] == "constant" else f"{p['schedule']} (peak lr {p['lr']:g})"
    return f"{method}, eps {p['eps']:.2f}, {p['n'] // 1000}k images, {p['epochs']} ep, {sched}"


def comparisons(pts: pl.DataFrame, c: dict[str, pl.DataFrame]) -> list[dict]:
    by = {p["point"]: p for p in pts.iter_rows(named=True)}
    bases = (c["trials"].filter(pl.col("method.name") == "der")["method.base"].unique().sort().to_list()
             or ["rs_fgsm"])
    rows = []
    for claim, mp, cp, note in COMPARISONS:
        for base in bases if "{der_base}" in cp else [None]:
            cpoint = cp.format(der_base=base)
            m, k = by.get(mp), by.get(cpoint)
            verdict, why = co_verdict(m, k)
            rows.append({"claim": claim, "text": CLAIMS[claim][0], "source": CLAIMS[claim][1],
                         "method_point": mp, "comparison_point": cpoint, "note": note,
                         "method": _side(m, mp), "comparison": _side(k, cpoint),
                         "verdict": verdict, "why": why})
    return rows


def _side(p: dict | None, point: str) -> dict:
    if p is None:
        return {"point": point, "setting": "not in the corpus yet", "n": 0, "seeds": []}
    keep = ("n_seeds", "seeds", "final_mean", "final_sd", "best_mean", "best_sd", "collapse_rate")
    out = {"point": point, "setting": setting(p), **{k: p[k] for k in keep}}
    out["n"] = out.pop("n_seeds")
    out["labels"] = p["labels"]
    return out


def energy(c: dict[str, pl.DataFrame], pts: pl.DataFrame) -> tuple[pl.DataFrame, list[dict]]:
    """Claim 4: dE(x) of epoch 0 and the last two epochs per trial, by source, and per point
    mean +- sd over seeds; and one verdict per source."""
    t = (c["trials"].with_columns(point=pl.col("trial").str.replace(r"-s\d+$", ""))
         .filter(pl.col("point").is_in(ENERGY_POINTS)).select("trial", "point"))
    probe = (c["epochs"].filter(pl.col("split") == "probe").join(t, on="trial")
             .select("trial", "point", "epoch", de=pl.col("de").cast(pl.Float64), source=pl.lit("probe")))
    batch = (c["batches"].join(t, on="trial").filter(pl.col("de").is_finite())
             .group_by("trial", "point", "epoch").agg(de=pl.col("de").cast(pl.Float64).mean())
             .with_columns(source=pl.lit("batch")))
    e = pl.concat([probe, batch.select(probe.columns)])
    e = e.with_columns(end=pl.col("epoch").max().over("trial", "source"))
    per_trial = (e.group_by("trial", "point", "source")
                 .agg(first=pl.col("de").filter(pl.col("epoch") == 0).first(),
                      second_last=pl.col("de").filter(pl.col("epoch") == pl.col("end") - 1).first(),
                      last=pl.col("de").filter(pl.col("epoch") == pl.col("end")).first(),
                      last_epoch=pl.col("end").first())
                 .with_columns(late=(pl.col("second_last") + pl.col("last")) / 2)
                 .with_columns(drift=pl.col("late") - pl.col("first")))
    stats = (per_trial.group_by("point", "source")
             .agg(n=pl.len(), seeds=pl.col("trial").str.extract(r"-s(\d+)$").cast(pl.Int64).sort(),
                  last_epoch=pl.col("last_epoch").max(),
                  *[x for col in ("first", "second_last", "last", "late", "drift")
                    for x in (pl.col(col).mean().alias(f"{col}_mean"), pl.col(col).std().alias(f"{col}_sd"))])
             .sort("source", "point", descending=[True, False]))
    by = {(r["point"], r["source"]): r for r in stats.iter_rows(named=True)}
    pset = {p["point"]: setting(p) for p in pts.iter_rows(named=True)}
    verdicts = []
    for source in ("probe", "batch"):
        pg, tr = by.get((ENERGY_POINTS[0], source)), by.get((ENERGY_POINTS[1], source))
        v, why = energy_verdict(pg, tr)
        verdicts.append({"claim": "4", "source": source, "verdict": v, "why": why,
                         "pgd": pset.get(ENERGY_POINTS[0], "not in the corpus yet"),
                         "trades": pset.get(ENERGY_POINTS[1], "not in the corpus yet")})
    return stats, verdicts


def robust_overfitting(c: dict[str, pl.DataFrame], segment: str = "ro") -> dict:
    """Claims 6-8 on an RO segment's test trials: per trial its label, RO gap and final |dE(x)|; the verdicts."""
    points = RO_POINTS[segment]
    lab = scoreboard.labels(c).filter((pl.col("segment") == segment) & (pl.col("split") == "test"))
    final_de = (c["batches"].join(lab.select("trial", last=pl.col("epochs") - 1), on="trial")
                .filter((pl.col("epoch") == pl.col("last")) & pl.col("de").is_finite())
                .group_by("trial").agg(final_abs_de=pl.col("de").cast(pl.Float64).abs().mean()))
    t = (lab.select("trial", "point", "seed", "method", "label", gap=pl.col("acc").list.max() - pl.col("acc").list.last(),
                    best=pl.col("acc").list.max(), final=pl.col("acc").list.last())
         .join(final_de, on="trial", how="left").sort("point", "seed"))
    of = lambda m: t.filter(pl.col("point") == points[m])  # noqa: E731
    v6 = ro_share_verdict(of("pgd")["label"].to_list())
    overfits = v6[0] == "reproduced"
    rows = [{"claim": "6", "method": "pgd", "verdict": v6[0], "why": v6[1]}]
    for m in ("trades", "weat_adv"):
        v = ro_gap_verdict(of(m)["gap"].to_list(), of("pgd")["gap"].to_list(), overfits)
        rows.append({"claim": "7", "method": m, "verdict": v[0], "why": v[1]})
    three = t.filter(pl.col("point").is_in(list(points.values())) & pl.col("final_abs_de").is_not_null())
    v8 = spearman_verdict(three["final_abs_de"].to_list(), three["gap"].to_list(), overfits)
    rows.append({"claim": "8", "method": "pgd, trades, weat_adv", "verdict": v8[0], "why": v8[1]})
    return {"trials": t.to_dicts(), "verdicts": rows}


def apart() -> list[dict]:
    """Claims the corpus cannot answer: the runs of their own that do (commands as run, 3 test seeds),
    and the docs/claims.md section holding their numbers and verdicts."""
    corpus = " ".join([*COMMON, *LARGE]).replace("device=cpu", "device=auto")
    weat = ("data.val_size=1000 data.probe_size=256 data.test_size=1000 eval.pgd_steps=10 eval.restarts=2 "
            "precision=bf16 channels_last=true data.subset=20000 epochs=10 attack.eps=0.2 attack.steps=3")
    e01 = "runs/claims/e01"
    return [
        {"claim": "5a", "source": "WEAT", "section": "Claim 5a: WEAT-ADV and WEAT-NAT against TRADES",
         "text": "WEAT (ADV and NAT) at least matches TRADES's robust accuracy",
         "commands": [f'C="{weat}"',
                      "python benchmarks/co_onsets.py run OUT --trial \"$C method=weat_adv method.beta=6\" "
                      "--trial \"$C method=weat_nat method.beta=6\" --trial \"$C method=trades method.beta=6\" "
                      "--seeds 3,4,5 --jobs 2"]},
        {"claim": "5b", "source": "JEAT", "section": "Claim 5b: JEAT against PGD-AT",
         "text": "JEAT trains to a usable robust classifier and its SGLD class samples beat PGD-AT's by IS / FID",
         "commands": [f"energy-at train -m method=jeat,pgd,erm attack.steps=3 attack.eps=0.1 {corpus} "
                      f"'stop_on=[]' seed=3,4,5 out={e01}",
                      "energy-at train method=erm seed=1 epochs=3 trial_id=evaluator out=runs/claims/evaluator",
                      f"for d in {e01}/checkpoints/trial=jeat-* {e01}/checkpoints/trial=pgd-*; do energy-at generate "
                      "\"$d\" --which last --n-per-class 100 --init pca --metrics --extractor classifier "
                      "--metrics-classifier runs/claims/evaluator/checkpoints/trial=evaluator/last.pt; done"]},
        {"claim": "5c", "source": "WEAT", "section": "Claim 5c: what attacks do to E(x)",
         "text": "untargeted attacks lower E(x) (and raise E(x,y)), targeted attacks raise E(x)",
         "commands": [f"energy-at train -m method=jeat,pgd,erm ... out={e01} (the 5b runs)",
                      *[f"energy-at eval {e01} --n 1000 --eps {eps} --attacks clean,pgd20,apgd-ce,pgd20-targeted "
                        "--energies --which last" for eps in ("0.1", "0.3")]]},
    ]


def claims(corpus: Path = CORPUS) -> dict:
    c = scoreboard.load(corpus)
    pts = points(c)
    stats, ev = energy(c, pts)
    present = set(pts["point"])
    return {
        "corpus": {"dir": str(corpus), "trials": c["trials"].height, "points": pts.height,
                   "grid_points": len(GRID), "missing_points": [g for g, _ in GRID if g not in present],
                   "seeds": sorted(c["trials"]["seed"].unique().to_list())},
        "points": pts.to_dicts(),
        "comparisons": comparisons(pts, c),
        "energy": stats.to_dicts(),
        "energy_verdicts": ev,
        "apart": apart(),
        "robust_overfitting": {seg: robust_overfitting(c, seg) for seg in RO_POINTS},
    }


# ----------------------------------------------------------------- output


def _ms(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None and not math.isnan(sd) else f"{mean:.3f} (1 seed)"


def _pair(m: dict, k: dict, key: str) -> str:
    f = lambda s: "-" if s["n"] == 0 else _ms(s[f"{key}_mean"], s[f"{key}_sd"])  # noqa: E731
    return f"{f(m)} / {f(k)}"


def _seeds(s: dict) -> str:
    return f"{s['n']} ({','.join(map(str, s['seeds']))})" if s["n"] else "0"


def markdown(r: dict) -> str:
    cp = r["corpus"]
    out = [f"Corpus: {cp['trials']} trials, {cp['points']} of {cp['grid_points']} grid points, seeds "
           f"{','.join(map(str, cp['seeds']))}" + (f"; not in yet: {', '.join(cp['missing_points'])}"
                                                   if cp["missing_points"] else ""), ""]
    out += ["### Claims 1-3: catastrophic overfitting (method / comparison)", "",
            "| # | claim (source) | method | comparison | note | n seeds | final val PGD | best val PGD | "
            "collapse rate | verdict | why |", "|" + "---|" * 11]
    for row in r["comparisons"]:
        m, k = row["method"], row["comparison"]
        rate = lambda s: "-" if s["n"] == 0 else f"{s['collapse_rate']:.2f}"  # noqa: E731
        out.append(f"| {row['claim']} | {row['text']} ({row['source']}) | `{m['point']}`: {m['setting']} | "
                   f"`{k['point']}`: {k['setting']} | {row['note'] or '-'} | {_seeds(m)} / {_seeds(k)} | "
                   f"{_pair(m, k, 'final')} | {_pair(m, k, 'best')} | {rate(m)} / {rate(k)} | "
                   f"**{row['verdict']}** | {row['why']} |")
    out += ["", f"### Claim 4: {CLAIMS['4'][0]} ({CLAIMS['4'][1]})", "",
            "dE(x) = E(x) - E(x*), mean ± sd over seeds. probe: the 256 training-probe images against the "
            "evaluation PGD-10 at the trial's eps; batch: the epoch mean of the training batches' dE(x) against "
            "the method's own training attack. eps differ: PGD-AT 0.30, TRADES 0.20.", "",
            "| point | source | n seeds | dE epoch 0 | dE epoch last-1 | dE last epoch | late (mean of last two) | "
            "drift (late - epoch 0) |", "|" + "---|" * 8]
    for e in r["energy"]:
        out.append(f"| `{e['point']}` | {e['source']} | {e['n']} ({','.join(map(str, e['seeds']))}) | "
                   f"{_ms(e['first_mean'], e['first_sd'])} | {_ms(e['second_last_mean'], e['second_last_sd'])} | "
                   f"{_ms(e['last_mean'], e['last_sd'])} | {_ms(e['late_mean'], e['late_sd'])} | "
                   f"{_ms(e['drift_mean'], e['drift_sd'])} |")
    out += ["", "| # | source of dE | PGD-AT | TRADES | verdict | why |", "|" + "---|" * 6]
    for v in r["energy_verdicts"]:
        why = v["why"].replace("|", "\\|")
        out.append(f"| 4 | {v['source']} | {v['pgd']} | {v['trades']} | **{v['verdict']}** | {why} |")
    for seg, ro in r["robust_overfitting"].items():
        out += ["", f"### Claims 6-8: robust overfitting (segment `{seg}`, its test seeds)", "",
                "| # | claim (source) | method | verdict | why |", "|---|---|---|---|---|"]
        for v in ro["verdicts"]:
            text, source = RO_CLAIMS[v["claim"]]
            out.append(f"| {v['claim']} | {text} ({source}) | {v['method']} | **{v['verdict']}** | {v['why']} |")
        out += ["", "| trial | label | best val PGD | final | RO gap | final-epoch mean abs dE(x), training batches |",
                "|---|---|---|---|---|---|"]
        for t in ro["trials"]:
            de = "-" if t["final_abs_de"] is None else f"{t['final_abs_de']:.3f}"
            out.append(f"| `{t['trial']}` | {t['label']} | {t['best']:.3f} | {t['final']:.3f} | {t['gap']:.3f} | {de} |")
    out += ["", "### Claims the corpus cannot answer: runs of their own", "",
            "| # | claim (source) | numbers and verdict | commands |", "|---|---|---|---|"]
    for n in r["apart"]:
        cmds = "<br>".join(f"`{x}`" for x in n["commands"]).replace("|", "\\|")
        out.append(f"| {n['claim']} | {n['text']} ({n['source']}) | docs/claims.md, section \"{n['section']}\" | "
                   f"{cmds} |")
    out += ["", "### Every grid point in the corpus", "",
            "| point | setting | n seeds | final val PGD | best val PGD | collapse rate | labels |", "|" + "---|" * 7]
    for p in r["points"]:
        out.append(f"| `{p['point']}` | {setting(p)} | {p['n_seeds']} ({','.join(map(str, p['seeds']))}) | "
                   f"{_ms(p['final_mean'], p['final_sd'])} | {_ms(p['best_mean'], p['best_sd'])} | "
                   f"{p['collapse_rate']:.2f} | {', '.join(p['labels'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--format", default="md", choices=["md", "json"])
    a = ap.parse_args(argv)
    r = claims(Path(a.corpus))
    print(json.dumps(r, default=str, indent=1) if a.format == "json" else markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
