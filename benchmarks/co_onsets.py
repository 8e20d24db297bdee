"""CO onsets on real logs: when PGD accuracy collapses vs when each detector fires.

    python benchmarks/co_onsets.py run OUT [--grid table] [--seeds 0,1,2] [--jobs 2] [--set k=v ...]
    python benchmarks/co_onsets.py table OUT [--format md|json]

`run` trains every trial of a grid into the one directory OUT (no Ray, no energy
stopper, so every curve is complete), `--jobs` processes at a time with 1 torch
thread each, longest trials first; a trial that already finished there is
skipped (a re-run resumes). It needs only torch, numpy and pyarrow: configs are
built from `workloads.config.TrialConfig` directly, not through Hydra, so it
also runs on a machine without the CLI's dependencies. `--trial "method=pgd
attack.steps=5"` (repeatable) replaces the grid; `--set` adds overrides to all.

`table` reads OUT, runs `analysis.detectors.detect` with its defaults on every
trial, and prints one row per trial: the val PGD accuracy per epoch, the
collapse epoch and the onset epoch of each detector source, each classified
against the collapse (docs/detection.md explains the columns).

Collapse epoch (CO in the PGD curve): the first epoch e >= 1 whose val-split PGD
accuracy is at most COLLAPSE_RATIO (0.5) x the best val PGD accuracy of epochs < e.
A trial without one counts as healthy.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLLAPSE_RATIO = 0.5

# common settings: docs/methods.md#measured-fashion-mnist's (SGD 0.05 momentum 0.9, batch 128, constant lr, small
# CNN) on 10k training images for 8 epochs, PGD-5 on 256 probe and 256 val images after each epoch;
# natural energies at every step, as when docs/detection.md was made (the default is sparser for
# random-start attacks: telemetry.natural_every)
TABLE_COMMON = ["data.subset=10000", "epochs=8", "data.val_size=256", "data.probe_size=256",
                "data.test_size=256", "eval.pgd_steps=5", "telemetry.natural_every=1"]
GRIDS: dict[str, list[list[str]]] = {
    # the onset table of docs/detection.md
    "table": [
        ["method=pgd", "attack.eps=0.3", "attack.steps=5"],
        ["method=fgsm", "attack.eps=0.3"],
        ["method=fgsm", "attack.eps=0.25"],
        ["method=rs_fgsm", "attack.eps=0.3"],
        ["method=n_fgsm", "attack.eps=0.3"],
    ],
}


# ----------------------------------------------------------------- configs without Hydra


def _parse(text: str, current):
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if text.lower() in ("null", "none"):
        return None
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, list):  # [0.5,0.75]
        return [float(v) for v in text.strip("[]").split(",") if v.strip()]
    for cast in (int, float):  # an empty (None) field: guess
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build(overrides: list[str], out: str):
    """A validated TrialConfig from `key=value` overrides (method=x means method.name=x)."""
    from orchestrator.config import with_fractions
    from workloads.config import TrialConfig, validate

    cfg = TrialConfig(out=out)
    for o in with_fractions(overrides):  # attack.alpha=0.3/4 as the command line takes it
        key, value = o.split("=", 1)
        *path, leaf = key.split(".")
        obj = cfg
        for p in path:
            obj = getattr(obj, p, None)
        if is_dataclass(getattr(obj, leaf, None)):
            obj, leaf = getattr(obj, leaf), "name"
        if not is_dataclass(obj) or leaf not in {f.name for f in fields(obj)}:
            raise SystemExit(f"unknown field {key!r}")
        setattr(obj, leaf, _parse(value, getattr(obj, leaf)))
    validate(cfg)
    return cfg


# ----------------------------------------------------------------- run


def run_one(out: str, overrides: list[str]) -> None:
    from workloads.trial import Trial

    cfg = build(overrides, out)
    t0 = time.time()
    summary = Trial(cfg).run()
    print(f"{summary['trial']}: {summary['status']} in {time.time() - t0:.0f} s ({' '.join(overrides)})", flush=True)


def _finished(out: Path, overrides: list[str]) -> bool:
    from workloads.config import trial_id

    result = out / "trials" / f"trial={trial_id(build(overrides, str(out)))}" / "result.json"
    return result.exists() and json.loads(result.read_text()).get("status") == "finished"


def run_grid(out: Path, trials: list[list[str]], jobs: int, longest_first: bool = True,
             runner: Path | None = None) -> None:
    """Train the unfinished `trials` into `out`, `jobs` processes at a time (in the given order, or
    longest first), each as `python RUNNER one OUT overrides...` (RUNNER: this file)."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [t for t in trials if not _finished(out, t)]

    def cost(t: list[str]) -> float:  # training steps x forward-backward passes per step
        cfg = build(t, str(out))
        passes = 1 + (cfg.attack.steps if cfg.method.name in ("pgd", "trades", "mart") else 1)
        return (cfg.data.subset or 59000) * cfg.epochs * passes

    if longest_first:
        todo.sort(key=cost, reverse=True)
    print(f"{len(trials)} trials, {len(trials) - len(todo)} already finished; {jobs} at a time", flush=True)
    running: list[subprocess.Popen] = []
    t0 = time.time()
    while todo or running:
        while todo and len(running) < jobs:
            t = todo.pop(0)
            running.append(subprocess.Popen([sys.executable, str(runner or __file__), "one", str(out), *t]))
        time.sleep(0.5)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            if p.returncode:
                print(f"trial failed (rc {p.returncode}): {p.args[3:]}", flush=True)
    print(f"all done in {time.time() - t0:.0f} s", flush=True)


# ----------------------------------------------------------------- table


def collapse_epoch(acc: list[float]) -> int | None:
    """First epoch e >= 1 with acc[e] <= COLLAPSE_RATIO * max(acc[:e])."""
    for e in range(1, len(acc)):
        if acc[e] <= COLLAPSE_RATIO * max(acc[:e]):
            return e
    return None


def verdict(onset: int | None, collapse: int | None) -> str:
    if onset is None:
        return "missed" if collapse is not None else "-"
    if collapse is None:
        return "false alarm"
    d = onset - collapse
    return "on time" if d == 0 else (f"early {-d}" if d < 0 else f"late {d}")


def rows(dirs: list[str]) -> list[dict]:
    import polars as pl

    from analysis.detectors import detect
    from analysis.read import SweepLogs

    sweep = SweepLogs(dirs)
    events = detect(sweep.scan("batches"), sweep.scan("epochs"), sweep.scan("probes"))
    epochs = sweep.scan("epochs").collect()
    trials = sweep.trials()
    out = []
    for t in trials.iter_rows(named=True):
        tid = t["trial"]
        ep = epochs.filter(pl.col("trial") == tid).sort("epoch")
        val = ep.filter(pl.col("split") == "val")["acc_pgd"].to_list()
        probe = ep.filter(pl.col("split") == "probe")["acc_pgd"].to_list()
        collapse = collapse_epoch(val)
        ev = events.filter(pl.col("trial") == tid)
        onsets: dict[str, dict] = {}
        for e in ev.iter_rows(named=True):
            source = e["evidence"].split(":", 1)[0]
            key = {"co_energy": f"co_energy.{source}"}.get(e["kind"], e["kind"])
            if key not in onsets:
                onsets[key] = {"epoch": e["epoch"], "step": e["step"], "evidence": e["evidence"]}
        co = [v["epoch"] for k, v in onsets.items() if k.startswith("co_energy")]
        out.append({
            "trial": tid, "method": t.get("method.name"), "eps": t.get("attack.eps"), "seed": t.get("seed"),
            "subset": t.get("data.subset"), "epochs": len(val), "lr": t.get("optim.lr"),
            "schedule": t.get("schedule.name"),
            "val_acc_pgd": [round(a, 3) for a in val], "probe_acc_pgd": [round(a, 3) for a in probe],
            "probe_de": [round(x, 2) for x in ep.filter(pl.col("split") == "probe")["de"].to_list()],
            "probe_de_y": [round(x, 2) for x in ep.filter(pl.col("split") == "probe")["de_y"].to_list()],
            "collapse": collapse, "onsets": onsets,
            "co_energy": min(co) if co else None,
            "verdict_co_energy": verdict(min(co) if co else None, collapse),
            "verdict_co_pgd_probe": verdict(onsets.get("co_pgd_probe", {}).get("epoch"), collapse),
        })
    out.sort(key=lambda r: (str(r["method"]), -(r["eps"] or 0), r["subset"] or 0, r["seed"] or 0))
    return out


def markdown(table: list[dict]) -> str:
    def cell(r, k):
        o = r["onsets"].get(k)
        if o is None:
            return "-"
        return f"{o['epoch']}" + (f" (step {o['step']})" if o["step"] is not None else "")

    lines = ["| method | eps | seed | val PGD acc by epoch | collapse | co_energy batch | epoch | probe "
             "| co_energy verdict | co_pgd_probe | verdict | other |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        other = ", ".join(f"{k} {v['epoch']}" for k, v in r["onsets"].items()
                          if not k.startswith("co_")) or "-"
        lines.append(
            f"| {r['method']} | {r['eps']} | {r['seed']} | {' '.join(f'{a:.2f}' for a in r['val_acc_pgd'])} "
            f"| {'-' if r['collapse'] is None else r['collapse']} "
            f"| {cell(r, 'co_energy.batch')} | {cell(r, 'co_energy.epoch')} | {cell(r, 'co_energy.probe')} "
            f"| {r['verdict_co_energy']} | {cell(r, 'co_pgd_probe')} | {r['verdict_co_pgd_probe']} | {other} |")
    return "\n".join(lines)


# ----------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "one":
        run_one(argv[1], argv[2:])
        return 0
    from workloads.config import OneLineParser

    ap = OneLineParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--grid", default="table", choices=sorted(GRIDS))
    r.add_argument("--trial", action="append", help="overrides of one grid point (replaces --grid)")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--set", nargs="*", default=[], help="overrides added to every trial")
    t = sub.add_parser("table")
    t.add_argument("dirs", nargs="+")
    t.add_argument("--format", default="md", choices=["md", "json"])
    a = ap.parse_args(argv)
    if a.cmd == "run":
        points = [p.split() for p in a.trial] if a.trial else [TABLE_COMMON + p for p in GRIDS[a.grid]]
        trials = [[*p, *a.set, f"seed={s}", "threads=1", "device=cpu"] for p in points for s in a.seeds.split(",")]
        for tr in trials:
            build(tr, str(a.out))  # every config valid before anything starts
        run_grid(Path(a.out).resolve(), trials, a.jobs)
    else:
        table = rows(a.dirs)
        print(json.dumps(table, indent=1) if a.format == "json" else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
