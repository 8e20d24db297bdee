"""Benchmark: scan + detect + rank over a ~40M-row `batches` table, polars vs pandas.

    .venv/bin/python benchmarks/analysis_scan.py [--data DIR] [--trials 100 --epochs 100 --steps 4000]

Generates (once, cached under --data) a sweep of `trials` trials x `epochs` epochs x
`steps` steps per epoch with the real schema, written as trials write it (the project's
PartWriter, a part every `telemetry.flush_every`=100 steps, compacted one epoch behind),
healthy / CO / RO / NaN / diverging trials; then times

  polars: analysis.SweepLogs scan -> analysis.detect -> trial_metrics -> rank
  pandas: the same statistics written plainly with pandas (groupby/rolling/expanding)

in one process, checks both give the same events and ranking, and prints times
and the ratio. Probes are not part of it (per-sample tables are small next to batches).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import detect, rank, trial_metrics  # noqa: E402
from analysis.detectors import BATCH_COLS, CO_SIGNALS, MAD_TO_SD, ordered_batches  # noqa: E402
from analysis.rank import METRICS  # noqa: E402
from analysis.read import SweepLogs  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.run_dir import RunDir  # noqa: E402
from workloads.telemetry.schema import SCHEMA_VERSION, arrow_schema  # noqa: E402
from workloads.telemetry.writer import PartWriter  # noqa: E402

FLUSH = 100  # telemetry.flush_every's default



# ----------------------------------------------------------------- data


def _config(i: int) -> dict:
    method = ("fgsm", "rs_fgsm")[i % 2]
    eps = (0.15, 0.2, 0.25, 0.3, 0.35)[(i // 2) % 5]
    lr = (0.05, 0.1)[(i // 10) % 2]
    return {"method.name": method, "attack.eps": eps, "optim.lr": lr, "seed": i // 20,
            "epochs": 0, "data.name": "fashion_mnist"}


def _trial(i: int, epochs: int, steps: int, rng: np.random.Generator,
           name: str | None = None) -> tuple[pa.Table, pa.Table, int | None]:
    cfg = _config(i)
    n = epochs * steps
    step = np.arange(n, dtype=np.int64)
    epoch = (step // steps).astype(np.int32)
    t = step.astype(np.float32) / steps
    co_p = {0.15: 0.0, 0.2: 0.3, 0.25: 0.7, 0.3: 0.9, 0.35: 1.0}[cfg["attack.eps"]]
    co_p *= 0.3 if cfg["method.name"] == "rs_fgsm" else 1.0
    co_epoch = int(rng.integers(3, epochs // 2)) if rng.random() < co_p else None
    ro = co_epoch is None and cfg["method.name"] == "rs_fgsm"

    f32 = np.float32
    de = (-0.6 - 0.3 * t / epochs + rng.standard_normal(n, f32) * f32(0.3)).astype(f32)
    de_std = (0.7 + rng.standard_normal(n, f32) * f32(0.1)).astype(f32)
    loss = (2.2 * np.exp(-t / 10) + 0.8 + rng.standard_normal(n, f32) * f32(0.05)).astype(f32)
    if co_epoch is not None:
        co = epoch >= co_epoch
        de[co] = -4.5 + rng.standard_normal(co.sum(), f32) * f32(0.6)
        de_std[co] = 2.5 + rng.standard_normal(co.sum(), f32) * f32(0.3)
        loss[co] *= f32(0.6)
    de_y = (1.2 * de + rng.standard_normal(n, f32) * f32(0.1)).astype(f32)
    e_nat = (-8 - 2 * t / epochs + rng.standard_normal(n, f32) * f32(0.2)).astype(f32)
    e_nat_y = (e_nat + 1 + rng.standard_normal(n, f32) * f32(0.1)).astype(f32)
    if i == 7:  # numerical failure late in training
        loss[n * 5 // 8:] = np.nan
        de[n * 5 // 8:] = np.nan
    if i == 13:  # finite loss blow-up
        start = n * 3 // 4
        loss[start:] *= np.geomspace(1, 1e6, n - start).astype(f32)
    acc = (0.5 + 0.2 * t / epochs).astype(f32)
    batches = {
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
        "trial": pa.array([name or f"t{i:03d}"] * n, pa.string()),
        "method": pa.array([cfg["method.name"]] * n, pa.string()),
        "epoch": epoch, "step": step,
        "lr": np.where(epoch < epochs * 3 // 4, cfg["optim.lr"], cfg["optim.lr"] / 10).astype(f32),
        "loss": loss, "acc_nat": acc, "acc_adv": (acc - 0.2).astype(f32),
        "e_nat": e_nat, "e_adv": e_nat - de, "e_nat_y": e_nat_y, "e_adv_y": e_nat_y - de_y,
        "de": de, "de_y": de_y, "de_std": de_std,
        "wall_time": 1.7e9 + step * 0.02,
    }
    schema = arrow_schema("batches")
    table = pa.Table.from_arrays(
        [pa.array(batches[f.name], f.type) if f.name in batches else pa.nulls(n, f.type) for f in schema],
        schema=schema,
    )

    ep = np.arange(epochs)
    train = 0.3 + 0.25 * (1 - np.exp(-ep / 15)) + rng.normal(0, 0.01, epochs)
    val = train - 0.02 + rng.normal(0, 0.01, epochs)
    decay = epochs * 3 // 4  # the lr's decay, as the batches'
    if ro:  # after the lr decay: train keeps rising, val falls
        train += np.where(ep > decay, 0.01 * (ep - decay), 0)
        val -= np.where(ep > decay, 0.006 * (ep - decay), 0)
    if co_epoch is not None:
        train[co_epoch:] = 0.01
        val[co_epoch:] = 0.02
    ep_de = np.array([np.nanmean(de[k * steps:(k + 1) * steps]) if np.isfinite(de[k * steps:(k + 1) * steps]).any()
                      else np.nan for k in ep])
    m = 2 * epochs
    ep_cols = {
        "schema_version": pa.array(np.full(m, SCHEMA_VERSION, np.int16)),
        "trial": pa.array([name or f"t{i:03d}"] * m), "method": pa.array([cfg["method.name"]] * m),
        "epoch": np.tile(ep, 2).astype(np.int32), "step": np.tile((ep + 1) * steps - 1, 2),
        "split": pa.array(["probe"] * epochs + ["val"] * epochs), "n": np.full(m, 1000, np.int32),
        "acc_nat": np.clip(np.concatenate([train, val]) + 0.35, 0, 1).astype(f32),
        "acc_pgd": np.clip(np.concatenate([train, val]), 0, 1).astype(f32),
        "de": np.tile(ep_de, 2).astype(f32),
        # after the decay an RO trial's val dE(x,y) drifts below its training probe's: the gap `ro` reads
        # (with noise: `ro` measures the gap's rise in units of its pre-decay noise)
        "de_y": np.concatenate([1.2 * ep_de, 1.2 * ep_de + rng.normal(0, 0.005, epochs)
                                - (0.02 * np.maximum(ep - decay, 0) if ro else 0)]).astype(f32),
        "lr": np.tile(np.where(ep < decay, cfg["optim.lr"], cfg["optim.lr"] / 10), 2).astype(f32),
        "de_std": np.full(m, 0.7, f32),
        "train_loss": np.full(m, 1.0, f32),  # every row an epoch end (a null train_loss marks a mid-epoch probe)
    }
    eschema = arrow_schema("epochs")
    etable = pa.Table.from_arrays(
        [pa.array(ep_cols[f.name], f.type) if f.name in ep_cols else pa.nulls(m, f.type) for f in eschema],
        schema=eschema,
    )
    return table, etable, co_epoch


def generate(root: Path, trials: int, epochs: int, steps: int, flush: int = FLUSH) -> None:
    """Write the sweep under `root` as trials write it, unless a matching one is cached there.

    Each trial's batches go through the project's PartWriter, a part every `flush` steps (the
    `telemetry.flush_every` default), and after each epoch the trial's compaction runs one epoch
    behind (`PartWriter.compact` up to the previous epoch's checkpoint) and once more at the end, as
    `Trial.run` does: a finished trial of 100 epochs holds 3 files a table (100 = 64 + 32 + 4).

    The writes skip fsync (`_no_fsync`): 400,000 parts fsync'd one by one take hours on this VM's
    disk, and what is measured is reading the files, which are the same either way."""
    params = {"trials": trials, "epochs": epochs, "steps": steps, "flush": flush, "version": 3}
    marker, started = root / "_bench.json", root / "_bench_started.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    if not (started.exists() and json.loads(started.read_text()) == params):  # another sweep: start over
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        started.write_text(json.dumps(params))
    t0 = time.perf_counter()
    run_dir = RunDir(root)
    with _no_fsync():
        _write_trials(root, run_dir, trials, epochs, steps, flush)
    marker.write_text(json.dumps(params))
    files = sum(1 for _ in (root / "batches").rglob("*.parquet"))
    print(f"generated {trials * epochs * steps:,} batch rows in {files:,} files in {time.perf_counter() - t0:.0f} s "
          f"under {root}")


def write_epoch(batches: PartWriter, epochs: PartWriter, table: pa.Table, etable: pa.Table, epoch: int, steps: int,
                committed: dict[str, int], flush: int = FLUSH) -> dict[str, int]:
    """Write epoch `epoch` of a synthetic trial as `Trial.run` does: its batch rows a part every `flush`
    steps, its epoch rows, then the compaction up to the previous checkpoint's `committed`; the new one."""
    for a in range(epoch * steps, (epoch + 1) * steps, flush):
        part = table.slice(a, min(flush, (epoch + 1) * steps - a))
        batches.write({c: part.column(c).combine_chunks() for c in part.column_names})
    epochs.write(etable.filter(pa.compute.equal(etable["epoch"], epoch)).to_pydict())
    batches.compact(committed["batches"])
    epochs.compact(committed["epochs"])
    return {"batches": batches.seq, "epochs": epochs.seq}


@contextlib.contextmanager
def _no_fsync():
    fsync, os.fsync = os.fsync, lambda fd: None
    try:
        yield
    finally:
        os.fsync = fsync


def _write_trials(root: Path, run_dir: RunDir, trials: int, epochs: int, steps: int, flush: int) -> None:
    for i in range(trials):
        tid = f"t{i:03d}"
        if run_dir.read_result(tid) is not None:  # written by an interrupted generation: resume after it
            continue
        for table_name in ("batches", "epochs"):
            shutil.rmtree(run_dir.table(table_name, tid), ignore_errors=True)
        rng = np.random.default_rng(1000 + i)
        table, etable, _ = _trial(i, epochs, steps, rng)
        batches, ep_writer = PartWriter(root, "batches", tid, seq=0), PartWriter(root, "epochs", tid, seq=0)
        committed = {"batches": 0, "epochs": 0}
        for e in range(epochs):
            committed = write_epoch(batches, ep_writer, table, etable, e, steps, committed, flush)
        batches.compact(batches.seq)
        ep_writer.compact(ep_writer.seq)
        run_dir.write_config(tid, {**_config(i), "epochs": epochs, "trial_id": tid, "out": str(root)})
        run_dir.write_result(tid, {"trial": tid, "status": "failed" if i == 7 else "finished", "reason": None,
                                   "epochs_done": epochs})


# ----------------------------------------------------------------- polars (the analysis package)


def run_polars(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    t0 = time.perf_counter()
    sweep = SweepLogs(root)
    batches = ordered_batches(sweep.scan("batches"))  # the one read detect() would do
    epochs = sweep.scan("epochs").collect()
    t1 = time.perf_counter()
    events = detect(batches, epochs)
    t2 = time.perf_counter()
    ranking = rank(trial_metrics(epochs, events), sweep.trials())
    t3 = time.perf_counter()
    return events, ranking, {"scan": t1 - t0, "detect": t2 - t1, "rank": t3 - t2, "total": t3 - t0}


# ----------------------------------------------------------------- pandas, plainly


def _nanmad(x: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(x - np.nanmedian(x)))) if np.isfinite(x).any() else np.nan


def _expanding_before(s: pd.Series, how: str) -> pd.Series:
    e = s.expanding()
    out = e.median() if how == "median" else e.apply(_nanmad, raw=True)
    return out.shift(1)


def _first(frame: pd.DataFrame, hit: pd.Series, order: str) -> pd.DataFrame:
    return frame[hit.fillna(False).astype(bool)].sort_values(["trial", order], kind="stable").groupby(
        "trial", sort=True).head(1)


def pandas_co_batch(df: pd.DataFrame, z=6.0, min_shift=1.0, window=20, min_share=0.75, warmup=2, min_scale=0.05):
    sig = list(CO_SIGNALS)
    st = df.groupby(["trial", "epoch"], sort=True)[sig].agg(["mean", "std"])
    st.columns = [f"{c}_{s}" for c, s in st.columns]
    st = st.reset_index()
    g = st.groupby("trial", sort=False)
    st["n_prev"] = g.cumcount()
    for c in sig:
        st[f"{c}_loc"] = g[f"{c}_mean"].transform(lambda s: _expanding_before(s, "median"))
        within = g[f"{c}_std"].transform(lambda s: _expanding_before(s, "median"))
        between = MAD_TO_SD * g[f"{c}_mean"].transform(lambda s: _expanding_before(s, "mad"))
        st[f"{c}_scale"] = np.fmax(np.sqrt(within ** 2 + between ** 2), min_scale)
    keep = ["trial", "epoch", "n_prev"] + [f"{c}_{s}" for c in sig for s in ("loc", "scale")]
    m = df.merge(st[keep], on=["trial", "epoch"], how="left")
    need = int(np.ceil(min_share * window))
    found = []
    for c, side in CO_SIGNALS.items():
        dev = m[c] - m[f"{c}_loc"]
        zc = dev / m[f"{c}_scale"]
        flags = {"high": (zc >= z) & (dev >= min_shift)}
        if side == 0:
            flags["low"] = (zc <= -z) & (dev <= -min_shift)
        hit = pd.Series(False, index=m.index)
        for flag in flags.values():
            count = flag.astype(float).groupby(m["trial"]).rolling(window).sum().reset_index(level=0, drop=True)
            hit |= count.sort_index() >= need
        rows = m[["trial", "epoch", "step"]].assign(score=zc)
        found.append(_first(rows, hit & (m["n_prev"] >= warmup), "step"))
    ev = pd.concat(found).assign(a=lambda f: -f["score"].abs()).sort_values(["trial", "step", "a"], kind="stable")
    return ev.groupby("trial").head(1).drop(columns="a").assign(kind="co_energy")


def pandas_co_epoch(ep: pd.DataFrame, z=3.5, min_shift=1.0, warmup=2, min_scale=0.1, z_spread=6.0):
    e = ep[ep["split"] == "probe"].sort_values(["trial", "epoch"]).reset_index(drop=True)
    g = e.groupby("trial", sort=False)
    e["n_prev"] = g.cumcount()
    found = []
    for c, side in CO_SIGNALS.items():
        loc = g[c].transform(lambda s: _expanding_before(s, "median"))
        scale = np.fmax(MAD_TO_SD * g[c].transform(lambda s: _expanding_before(s, "mad")), min_scale)
        dev = e[c] - loc
        score = dev / scale
        zc = z if side == 0 else z_spread  # as analysis.detectors: de_std keeps the stricter z
        hit = (score >= zc) & (dev >= min_shift)
        if side == 0:
            hit |= (score <= -zc) & (dev <= -min_shift)
        found.append(_first(e[["trial", "epoch"]].assign(score=score), hit & (e["n_prev"] >= warmup), "epoch"))
    ev = pd.concat(found).assign(a=lambda f: -f["score"].abs()).sort_values(["trial", "epoch", "a"], kind="stable")
    return ev.groupby("trial").head(1).drop(columns="a").assign(kind="co_energy", step=np.nan)


def pandas_co_pgd(ep: pd.DataFrame, ratio=0.6, min_drop=0.1, z=3.0):
    e = ep[ep["split"] == "probe"].sort_values(["trial", "epoch"]).copy()
    a, n = e["acc_pgd"].where(np.isfinite(e["acc_pgd"])), e["n"].astype("float64")
    g = a.groupby(e["trial"])
    best = g.cummax().groupby(e["trial"]).shift(1)
    n_best = n.where(a == g.cummax()).groupby(e["trial"]).ffill().groupby(e["trial"]).shift(1)
    pooled = (best * n_best + a * n) / (n_best + n)
    score = best - a
    zs = score / np.sqrt(pooled * (1 - pooled) * (1 / n_best + 1 / n))
    hit = (a <= ratio * best) & (score >= min_drop) & (zs >= z)
    # every probe row here is an epoch end (the generated sweep has no trigger): no step, as analysis.detectors
    return _first(e[["trial", "epoch"]].assign(score=score), hit, "epoch").assign(kind="co_pgd_probe", step=np.nan)


def pandas_ro(ep: pd.DataFrame, fall_z=3.5):
    """`ro` with its defaults: after the lr's first decay, a val acc_pgd fall_z standard errors below its best since."""
    e = ep[ep["split"] == "val"][["trial", "epoch", "acc_pgd", "lr", "n"]].sort_values(["trial", "epoch"]).reset_index(drop=True)
    t = e["trial"]
    post = (e["lr"] < e.groupby("trial")["lr"].transform("first")).astype(int).groupby(t).cummax().astype(bool)
    val = e["acc_pgd"].astype("float64").where(post)
    best = val.groupby(t).cummax()
    best_epoch = e["epoch"].where(post & (best != best.groupby(t).shift(1))).groupby(t).ffill()
    score = (e["epoch"] - best_epoch).astype("float64")
    se = np.sqrt(2 * best * (1 - best) / e["n"].astype("float64"))
    hit = post & ((best - val) >= fall_z * se)
    return _first(e[["trial", "epoch"]].assign(score=score), hit, "epoch").assign(kind="ro", step=np.nan)


def pandas_nan(df: pd.DataFrame, factor=10.0, patience=5, min_steps=50):
    cols = ["loss", "de", "de_y", "de_std"]
    bad = ~np.isfinite(df[cols]).all(axis=1)
    nonfinite = _first(df[["trial", "epoch", "step"]].assign(score=1.0), bad, "step")
    finite = np.isfinite(df["loss"])
    per_epoch = (df.assign(l=df["loss"].where(finite), f=finite).groupby(["trial", "epoch"], sort=True)
                 .agg(s=("l", "sum"), n=("f", "sum")).reset_index())
    g = per_epoch.groupby("trial")
    per_epoch["before_n"] = g["n"].cumsum() - per_epoch["n"]
    per_epoch["mean_before"] = (g["s"].cumsum() - per_epoch["s"]) / per_epoch["before_n"]
    per_epoch["limit"] = (factor * per_epoch["mean_before"]).where(per_epoch["before_n"] >= min_steps)
    m = df[["trial", "epoch", "step", "loss"]].merge(per_epoch[["trial", "epoch", "limit", "mean_before"]],
                                                     on=["trial", "epoch"], how="left")
    high = ((m["loss"] > m["limit"]) & finite).astype(float)
    run = high.groupby(m["trial"]).rolling(patience).sum().reset_index(level=0, drop=True).sort_index()
    diverged = _first(m[["trial", "epoch", "step"]].assign(score=m["loss"] / m["mean_before"]), run >= patience, "step")
    return pd.concat([nonfinite, diverged]).assign(kind="nan")


def pandas_rank(ep: pd.DataFrame, events: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    val = ep[ep["split"] == "val"].sort_values(["trial", "epoch"])
    g = val.groupby("trial")
    m = pd.DataFrame({"robust_best": g["acc_pgd"].max(), "robust_final": g["acc_pgd"].last(),
                      "clean_final": g["acc_nat"].last()}).astype(float)
    m["ro_gap"] = m["robust_best"] - m["robust_final"]
    co = events[events["kind"].isin(["co_energy", "co_pgd_probe"])].groupby("trial")["epoch"].min()
    m["co_epoch"] = co.reindex(m.index).astype(float)
    m["co"] = m["co_epoch"].notna().astype(float)
    keys = ["attack.eps", "data.name", "epochs", "method.name", "optim.lr"]
    j = trials.set_index("trial")[keys].join(m)
    out = j.groupby(keys).agg(**{f"{k}_{s}": (k, s) for k in METRICS for s in ("mean", "std")},
                              co_rate=("co", "mean"), n=("co", "size"))
    return out.reset_index()


def run_pandas(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    t0 = time.perf_counter()
    df = pd.read_parquet(root / "batches", columns=BATCH_COLS, partitioning=None)  # only needed columns
    ep = pd.read_parquet(root / "epochs", partitioning=None)
    trials = pd.DataFrame([
        {"trial": p.parent.name.removeprefix("trial="), **json.loads(p.read_text())}
        for p in sorted((root / "trials").glob("trial=*/config.json"))
    ])
    t1 = time.perf_counter()
    df = df.sort_values(["trial", "step"], kind="stable").reset_index(drop=True)
    for c in BATCH_COLS[3:]:
        df[c] = df[c].astype("float64")
    for c in ("acc_pgd", "acc_nat", *CO_SIGNALS):
        ep[c] = ep[c].astype("float64")
    energy = df[["trial", "epoch", "step", *CO_SIGNALS]].copy()
    for c in CO_SIGNALS:
        energy[c] = energy[c].where(np.isfinite(energy[c]))
    events = pd.concat([pandas_co_batch(energy), pandas_co_epoch(ep), pandas_co_pgd(ep),
                        pandas_ro(ep), pandas_nan(df)], ignore_index=True)
    t2 = time.perf_counter()
    ranking = pandas_rank(ep, events, trials)
    t3 = time.perf_counter()
    return events, ranking, {"scan": t1 - t0, "detect": t2 - t1, "rank": t3 - t2, "total": t3 - t0}


# ----------------------------------------------------------------- compare and report


def same_events(a: pl.DataFrame, b: pd.DataFrame) -> bool:
    key = ["trial", "kind", "epoch", "step"]
    left = a.select(*key, "score").with_columns(pl.col("epoch").cast(pl.Int64)).sort(key, nulls_last=True)
    right = (
        pl.from_pandas(b[key + ["score"]].reset_index(drop=True))
        .with_columns(pl.col("epoch").cast(pl.Int64), pl.col("step").cast(pl.Int64),
                      pl.col("trial").cast(pl.String), pl.col("score").cast(pl.Float64))
        .sort(key, nulls_last=True)
    )
    if left.select(key).rows() != right.select(key).rows():
        only = {"polars only": left.join(right, on=key, how="anti", nulls_equal=True),
                "pandas only": right.join(left, on=key, how="anti", nulls_equal=True)}
        for side, rows in only.items():
            print(f"  {side}: {rows.height} events, by kind {dict(rows.group_by('kind').len().iter_rows())}")
        return False
    return bool(np.allclose(left["score"].to_numpy(), right["score"].to_numpy(), rtol=1e-6, atol=1e-9))


def same_ranking(a: pl.DataFrame, b: pd.DataFrame) -> bool:
    keys = ["attack.eps", "method.name", "optim.lr"]
    cols = [f"{m}_mean" for m in METRICS] + ["co_rate"]
    left = a.sort(keys).select(*keys, *cols).to_pandas()
    right = b.sort_values(keys).reset_index(drop=True)[keys + cols]
    return bool(np.allclose(left[cols].to_numpy(float), right[cols].to_numpy(float), equal_nan=True)
                and (left[keys].values == right[keys].values).all())


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/energy-at-bench-scan")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--steps", type=int, default=4000, help="logged batches per epoch")
    p.add_argument("--flush", type=int, default=FLUSH, help="steps per part, as telemetry.flush_every")
    p.add_argument("--skip-pandas", action="store_true")
    args = p.parse_args(argv)
    root = Path(args.data)
    generate(root, args.trials, args.epochs, args.steps, args.flush)
    rows = args.trials * args.epochs * args.steps
    print(f"data: {root} ({rows:,} batch rows, {os.cpu_count()} cpus, polars {pl.__version__}, "
          f"pandas {pd.__version__})")

    events, ranking, tp = run_polars(root)
    print("polars: " + ", ".join(f"{k} {v:.2f} s" for k, v in tp.items()))
    print(f"  {events.height} events: {dict(events.group_by('kind').len().sort('kind').iter_rows())}")
    if args.skip_pandas:
        return 0
    pd_events, pd_ranking, tq = run_pandas(root)
    print("pandas: " + ", ".join(f"{k} {v:.2f} s" for k, v in tq.items()))
    ev_ok, rank_ok = same_events(events, pd_events), same_ranking(ranking, pd_ranking)
    print(f"same events: {ev_ok}; same ranking: {rank_ok}")
    print(f"speed-up (pandas / polars, total): {tq['total'] / tp['total']:.1f}x; "
          f"detect+rank only: {(tq['detect'] + tq['rank']) / (tp['detect'] + tp['rank']):.1f}x")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    return 0 if ev_ok and rank_ok else 1


if __name__ == "__main__":
    sys.exit(main())
