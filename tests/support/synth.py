"""Synthetic trial logs written as real Parquet (shared by the test_analysis_* modules).

`synth_trial` makes one trial's batches/epochs/probes tables with the shapes of
docs/methods.md#signatures (healthy FGSM: batch dE around -0.6, the measured eps 0.15
run's -0.6 to -1.0; CO: dE jumps to about -4.5, inside the measured -3 to -6, and
stays, de_std widens, PGD probe accuracy collapses; RO: the lr decays x0.1 two epochs before
the peak (at least 3 epochs in), then val PGD accuracy falls from the peak while train PGD
accuracy rises, and the val split's dE drifts negative from the probe's -0.15, the CIFAR-10 SAT
level).
`write_sweep` lays tables out as a sweep directory, several parts per trial.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.run_dir import RunDir
from workloads.telemetry.schema import SCHEMA_VERSION, arrow_schema

SHAPES = ("flat", "drift", "noisy", "warmup")


def _table(name: str, cols: dict[str, np.ndarray | list], n: int) -> pa.Table:
    schema = arrow_schema(name)
    arrays = [
        pa.array(cols[f.name], type=f.type) if f.name in cols else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _level(shape: str, t: np.ndarray, n_epochs: int) -> np.ndarray:
    """Healthy batch-mean dE at fractional epoch t."""
    if shape == "drift":
        return -0.2 - 0.8 * t / n_epochs
    if shape == "warmup":  # lr ramp over 3 epochs: +0.4 -> overshoot -1.3 -> settle -0.7
        return -0.7 + 1.1 * np.exp(-t / 0.6) - 0.9 * t * np.exp(1 - t) * (t < 6)
    return np.full_like(t, -0.6)


def synth_trial(
    trial: str,
    *,
    shape: str = "flat",
    epochs: int = 12,
    steps: int = 50,
    co_epoch: int | None = None,
    ro_peak: int | None = None,
    nan_step: int | None = None,
    n_probe: int = 200,
    seed: int = 0,
) -> dict[str, pa.Table]:
    """One trial's tables. co_epoch: CO from the first step of that epoch;
    ro_peak: val robust accuracy peaks there, after an lr decay, then falls; nan_step: loss/energies NaN from there."""
    rng = np.random.default_rng(seed)
    n = epochs * steps
    step = np.arange(n)
    epoch = step // steps
    t = step / steps
    noise = 0.5 if shape == "noisy" else 0.15
    de = _level(shape, t, epochs) + rng.normal(0, noise, n)
    de_std = 0.6 + 0.1 * t / epochs + rng.normal(0, noise / 3, n)
    if shape == "noisy":  # isolated spikes, 2% of batches
        spikes = rng.random(n) < 0.02
        de[spikes] -= rng.uniform(3, 6, spikes.sum())
    if ro_peak is not None:
        de += np.where(epoch > ro_peak, -0.05 * (t - ro_peak), 0.0)
    co = np.zeros(n, bool) if co_epoch is None else epoch >= co_epoch
    de[co] = -4.5 + rng.normal(0, 0.5, co.sum())
    de_std[co] = 2.5 + rng.normal(0, 0.3, co.sum())
    de_y = 1.2 * de + rng.normal(0, noise / 2, n)
    e_nat = -8.0 - 0.2 * t + rng.normal(0, 0.2, n)
    e_nat_y = e_nat + 1.0
    loss = 2.2 * np.exp(-t / 3) + 0.8 + rng.normal(0, 0.05, n)
    if nan_step is not None:
        loss[nan_step:] = np.nan
        de[nan_step:] = np.nan
    batches = {
        "schema_version": np.full(n, SCHEMA_VERSION), "trial": [trial] * n, "method": ["fgsm"] * n,
        "epoch": epoch, "step": step, "lr": np.minimum(1.0, (t + 1) / 3) * 0.05, "loss": loss,
        "acc_nat": np.clip(0.5 + 0.03 * t, 0, 1), "acc_adv": np.where(co, 0.9, 0.4),
        "e_nat": e_nat, "e_adv": e_nat - de, "e_nat_y": e_nat_y, "e_adv_y": e_nat_y - de_y,
        "de": de, "de_y": de_y, "de_std": de_std, "wall_time": 1.7e9 + step * 0.05,
    }

    # epoch level: one 'probe' and one 'val' row per epoch
    ep = np.arange(epochs)
    ep_de = np.array([np.nanmean(de[epoch == e]) if np.isfinite(de[epoch == e]).any() else np.nan for e in ep])
    ep_std = np.array([np.mean(de_std[epoch == e]) for e in ep])
    train_pgd = 0.30 + 0.25 * (1 - np.exp(-ep / 4)) + rng.normal(0, 0.01, epochs)
    val_pgd = train_pgd - 0.02 + rng.normal(0, 0.01, epochs)
    if ro_peak is not None:
        train_pgd = 0.30 + 0.04 * ep + rng.normal(0, 0.005, epochs)
        val_pgd = 0.30 + 0.04 * np.minimum(ep, ro_peak) - 0.03 * np.maximum(ep - ro_peak, 0)
        val_pgd += rng.normal(0, 0.005, epochs)
        ep_de = -0.15 + rng.normal(0, 0.01, epochs)
        val_de = ep_de - 0.06 * np.maximum(ep - ro_peak, 0) + rng.normal(0, 0.01, epochs)
    if shape == "noisy":
        train_pgd += rng.normal(0, 0.03, epochs)
        val_pgd += rng.normal(0, 0.03, epochs)
    if co_epoch is not None:
        train_pgd[ep >= co_epoch] = 0.01
        val_pgd[ep >= co_epoch] = 0.02
    last_step = (ep + 1) * steps - 1
    rows = {k: [] for k in ("epoch", "step", "split", "acc_pgd", "acc_nat", "de", "de_std")}
    val_de = val_de if ro_peak is not None else ep_de
    lr = np.full(epochs, 0.05) if ro_peak is None else np.where(ep >= max(ro_peak - 2, 3), 0.005, 0.05)
    for split, acc, split_de in (("probe", train_pgd, ep_de), ("val", val_pgd, val_de)):
        rows["epoch"] += list(ep)
        rows["step"] += list(last_step)
        rows["split"] += [split] * epochs
        rows["acc_pgd"] += list(np.clip(acc, 0, 1))
        rows["acc_nat"] += list(np.clip(acc + 0.35, 0, 1))
        rows["de"] += list(split_de)
        rows["de_std"] += list(ep_std)
    m = 2 * epochs
    ep_cols = {
        **rows, "schema_version": np.full(m, SCHEMA_VERSION), "trial": [trial] * m,
        "method": ["fgsm"] * m, "n": np.full(m, 1000), "de_y": 1.2 * np.array(rows["de"]),
        "lr": np.tile(lr, 2), "train_loss": np.full(m, 1.0), "wall_time": np.full(m, 1.7e9),
    }

    # probe samples: per-sample dE around the epoch level; at CO half jump to about -6
    pe = np.repeat(ep, n_probe)
    d = np.repeat(np.nan_to_num(ep_de, nan=-0.6), n_probe) + rng.normal(0, 0.4, pe.size)
    if co_epoch is not None:
        jump = (pe >= co_epoch) & (rng.random(pe.size) < 0.5)
        d[jump] = -6 + rng.normal(0, 1, jump.sum())
    p_nat = -8.0 + rng.normal(0, 0.5, pe.size)
    probe_cols = {
        "schema_version": np.full(pe.size, SCHEMA_VERSION), "trial": [trial] * pe.size, "epoch": pe,
        "sample_id": np.tile(np.arange(n_probe), epochs), "label": np.tile(np.arange(n_probe) % 10, epochs),
        "e_nat": p_nat, "e_adv": p_nat - d, "e_nat_y": p_nat + 1, "e_adv_y": p_nat + 1 - 1.2 * d,
        "correct_nat": rng.random(pe.size) < 0.8, "correct_adv": rng.random(pe.size) < 0.4,
    }
    return {
        "batches": _table("batches", batches, n),
        "epochs": _table("epochs", ep_cols, m),
        "probes": _table("probes", probe_cols, pe.size),
    }


def write_sweep(
    root: Path,
    trials: dict[str, dict[str, pa.Table]],
    configs: dict[str, dict] | None = None,
    results: dict[str, dict] | None = None,
    parts: int = 3,
) -> Path:
    """Write `trials` (id -> tables) as `<root>/<table>/<id>/part-<seq>.parquet`."""
    for trial, tables in trials.items():
        for name, table in tables.items():
            d = RunDir(root).table(name, trial)
            d.mkdir(parents=True, exist_ok=True)
            bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
            for seq, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                pq.write_table(table.slice(a, b - a), d / f"part-{seq:06d}.parquet")
        tdir = root / "trials" / f"trial={trial}"
        tdir.mkdir(parents=True, exist_ok=True)
        config = (configs or {}).get(trial, {"method.name": "fgsm", "seed": 0})
        (tdir / "config.json").write_text(json.dumps({**config, "trial_id": trial, "out": str(root)}))
        result = (results or {}).get(trial, {"status": "finished", "reason": None, "epochs_done": 0})
        (tdir / "result.json").write_text(json.dumps(result))
    return root


def prefix(tables: dict[str, pa.Table], last_step: int, steps: int) -> dict[str, pa.Table]:
    """The tables as the online stopper sees them when step `last_step` has been logged."""
    done = (last_step + 1) // steps - 1  # last completed epoch
    return {
        "batches": tables["batches"].filter(pc.less_equal(tables["batches"]["step"], last_step)),
        "epochs": tables["epochs"].filter(pc.less_equal(tables["epochs"]["epoch"], done)),
        "probes": tables["probes"].filter(pc.less_equal(tables["probes"]["epoch"], done)),
    }


def write_table(root: Path, name: str, trial: str, cols: dict[str, np.ndarray | list]) -> Path:
    """One part of table `name` for `trial` (columns not given are null), as a trial's writer lays it out."""
    n = len(next(iter(cols.values())))
    d = RunDir(root).table(name, trial)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"part-{len(list(d.glob('part-*.parquet'))):06d}.parquet"
    cols = {"schema_version": np.full(n, SCHEMA_VERSION), "trial": [trial] * n, **cols}
    pq.write_table(_table(name, cols, n), path)
    return path


MANY_METHODS = ("fgsm", "rs_fgsm", "n_fgsm", "pgd")
MANY_EPS = (0.1, 0.2, 0.3)


def many_trials_sweep(root: Path, n_trials: int, *, epochs: int = 10, steps: int = 30, n_probe: int = 32,
                      parts: int = 2) -> dict[str, dict]:
    """A sweep of `n_trials` trials over MANY_METHODS x MANY_EPS x seeds, as a sweep with the stopper on
    leaves it: FGSM at eps >= 0.2 and RS-FGSM at eps 0.3 with an odd seed collapse (CO) at epoch 3-6 and
    stop there (result 'stopped', an `events` row with action 'stopped' for the co_pgd_probe event the
    detectors find); PGD at eps 0.3 overfits (RO, finishes); every 7th trial has no test results in
    result.json; every 5th an `evals` table (clean, pgd20, autoattack). Returns trial id -> facts
    (method, eps, seed, co_epoch, ro, stopped, test, evals)."""
    facts: dict[str, dict] = {}
    for i in range(n_trials):
        method, eps, seed = MANY_METHODS[i % 4], MANY_EPS[(i // 4) % 3], i // 12
        trial = f"{method}-e{eps:g}-s{seed}-{i:04d}"
        co = (method == "fgsm" and eps >= 0.2) or (method == "rs_fgsm" and eps == 0.3 and seed % 2 == 1)
        co_epoch = 3 + (seed + i) % 4 if co and 3 + (seed + i) % 4 < epochs else None
        ro = method == "pgd" and eps == 0.3 and co_epoch is None
        n_epochs = epochs if co_epoch is None else co_epoch + 1  # a stopped trial ends at its stop epoch
        tables = synth_trial(trial, epochs=n_epochs, steps=steps, co_epoch=co_epoch, n_probe=n_probe,
                             ro_peak=min(epochs // 2, 6) if ro else None, seed=i,
                             shape=("flat", "drift", "warmup", "flat")[i % 4])
        ep = tables["epochs"]
        pgd_final = float(ep.filter(pc.equal(ep["split"], "val"))["acc_pgd"][-1].as_py())
        write_sweep(root, {trial: tables}, parts=parts,
                    configs={trial: {"method.name": method, "attack.eps": eps, "seed": seed, "epochs": epochs,
                                     "optim.lr": 0.05 if method != "pgd" else 0.1, "data.name": "fashion_mnist"}})
        result = {"status": "finished", "reason": None, "epochs_done": n_epochs}
        if co_epoch is not None:
            evidence = f"probe acc_pgd 0.01 <= 0.5 x best earlier (epoch {co_epoch - 1})"
            result |= {"status": "stopped", "stopped_by": "co_pgd_probe",
                       "reason": f"co_pgd_probe after epoch {co_epoch + 1}: {evidence}"}
            write_table(root, "events", trial, {
                "kind": ["co_pgd_probe"], "epoch": [co_epoch], "step": [None], "score": [0.5],
                "evidence": [evidence], "action": ["stopped"]})
        test = i % 7 != 3
        if test:
            acc = 0.02 if co_epoch is not None else pgd_final - 0.01
            result |= {"test_n": 1000, "test_acc_pgd": acc, "test_acc_nat": min(1.0, acc + 0.35 + 0.01 * (i % 5)),
                       "best_test_acc_pgd": pgd_final - 0.015, "best_test_acc_nat": min(1.0, pgd_final + 0.34)}
        (root / "trials" / f"trial={trial}" / "result.json").write_text(json.dumps(result))
        evals = i % 5 == 0
        if evals:
            attacks = ["clean", "pgd20", "autoattack"]
            write_table(root, "evals", trial, {
                "attack": attacks, "eps": [0.0, eps, eps], "n": [500] * 3, "which": ["best"] * 3,
                "accuracy": [0.85, pgd_final - 0.03, pgd_final - 0.06], "split": ["test"] * 3,
                "steps": [None, 20, None], "wall_time": [1.7e9 + k for k in range(3)]})
        facts[trial] = {"method": method, "eps": eps, "seed": seed, "co_epoch": co_epoch, "ro": ro,
                        "stopped": co_epoch is not None, "test": test, "evals": evals}
    return facts
