"""`energy-at eval`: final robustness (clean, PGD-k with restarts, AutoAttack) of trained checkpoints.

By default it evaluates the trial's own test split (its seed and `data.test_size`: the images of
result.json) in the trial's evaluation batches, its random starts drawn per sample from the trial's seed;
`--attacks clean,pgd-trial` then reproduces result.json's test_acc_nat and test_acc_pgd (`--which last`)
or best_test_acc_nat and best_test_acc_pgd (`--which best`).

Writes the `evals` table (and with --energies the `attack_energies` table and a
PNG) under the sweep directory the trial wrote to, and prints a table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from workloads.evaluation.checkpoint import CheckpointError, TrialRef, load_trial, resolve, trial_data
from workloads.evaluation.robust import ATTACK_HELP, evaluate, for_trial, head, parse_attacks, with_energy_attacks
from workloads.config import ConfigError, parse_number
from workloads.trial import resolve_device

USAGE = "energy-at eval <checkpoint.pt | trial dir | sweep dir> [options]"


class CommandParser(argparse.ArgumentParser):
    """argparse for `eval` and `generate`: a usage error is a CheckpointError, printed as one line (exit 2)."""

    def error(self, message: str):  # argparse would print the usage first
        raise CheckpointError(message)


def check_run_options(args: argparse.Namespace) -> None:
    """--threads and --device, as both commands take them."""
    if args.threads is not None and args.threads < 1:
        raise CheckpointError(f"--threads: must be a positive integer, got {args.threads}")
    if not (args.device in ("auto", "cpu", "cuda") or args.device.startswith("cuda:")):
        raise CheckpointError(f"--device: unknown device {args.device!r}; allowed: auto, cpu, cuda, cuda:N")


def parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="energy-at eval", usage=USAGE, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="checkpoint .pt, <out>/checkpoints/trial=<id>, or a sweep/train out dir")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--n", type=int, default=None, help="evaluate the first n samples of the split (default: all)")
    p.add_argument("--test-size", type=int, default=None,
                   help="size of the seeded test split (default: the trial's data.test_size; the test set's size "
                        "for all of it)")
    p.add_argument("--attacks", default="clean,pgd20,pgd50,autoattack", help=f"comma list of: {ATTACK_HELP}")
    p.add_argument("--restarts", type=int, default=2, help="PGD random restarts (default 2; pgd-trial: the trial's)")
    p.add_argument("--eps", default=None, help="L-inf radius, e.g. 0.031 or 8/255 (default: the trial's attack.eps)")
    p.add_argument("--alpha", default=None,
                   help="PGD step size, e.g. 2/255 (default max(eps/4, 2.5 eps/k) for k steps; pgd-trial: the trial's)")
    p.add_argument("--which", default="best", choices=("best", "last"), help="checkpoint of a trial/sweep dir")
    p.add_argument("--energies", action="store_true",
                   help="also log per-sample E(x), E(x,y) before/after untargeted and targeted attacks + PNG")
    p.add_argument("--batch-size", type=int, default=None, help="default: the trial's eval.batch_size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random starts and targets, drawn per sample (default: the trial's seed)")
    p.add_argument("--no-write", action="store_true", help="print only; write no Parquet")
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("eps", "alpha"):  # numbers or fractions, as attack.eps=8/255 in train
        if getattr(args, name) is not None:
            try:
                setattr(args, name, parse_number(f"--{name}", getattr(args, name)))
            except ConfigError as e:
                raise CheckpointError(str(e)) from None
    for name in ("n", "test_size", "restarts", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CheckpointError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
    if args.eps is not None and not 0 <= args.eps <= 1:
        raise CheckpointError(f"--eps: must be in [0, 1] (inputs are in [0,1]), got {args.eps}")
    if args.seed is not None and args.seed < 0:
        raise CheckpointError(f"--seed: must be a non-negative integer, got {args.seed}")
    if args.alpha is not None and args.alpha <= 0:
        raise CheckpointError(f"--alpha: must be positive, got {args.alpha}")
    check_run_options(args)


def write_table(sweep: Path, table: str, trial: str, columns: dict[str, list]) -> Path:
    """Append one part to `table` of `trial` (parts are never overwritten); its path."""
    from workloads.telemetry.schema import SCHEMA_VERSION
    from workloads.telemetry.writer import PartWriter

    n = len(next(iter(columns.values())))
    return PartWriter(sweep, table, trial).write({"schema_version": [SCHEMA_VERSION] * n, "trial": [trial] * n,
                                                  **columns})


def eval_one(ref: TrialRef, args: argparse.Namespace, specs, device: torch.device) -> dict:
    model, cfg, meta = load_trial(ref, device)
    eps = cfg.attack.eps if args.eps is None else args.eps
    seed = cfg.seed if args.seed is None else args.seed
    data = trial_data(cfg, device, test_size=args.test_size or cfg.data.test_size)
    whole = data.test if args.split == "test" else data.val
    split = head(whole, args.n)
    fewer = f" (fewer than --n {args.n})" if args.n and args.n > len(whole) else ""
    print(f"{args.split} split of trial {ref.trial}: {_samples(len(split), len(whole))}{fewer}, seed {cfg.seed}; "
          f"attack seed {seed}")
    result = evaluate(model, split, for_trial(specs, cfg, eps), eps, args.alpha, args.restarts, data.num_classes,
                      args.batch_size or cfg.eval.batch_size, energies=args.energies, seed=seed)
    epoch = meta.get("epoch")
    common = {"checkpoint": str(ref.checkpoint), "which": ref.which, "checkpoint_epoch": epoch,
              "split": args.split}
    out = {"trial": ref.trial, "method": cfg.method.name, "which": ref.which, "eps": eps, "n": len(split),
           "acc": {r["attack"]: r["accuracy"] for r in result.rows}, "rows": result.rows}
    if not args.no_write:
        now = time.time()
        cols: dict[str, list] = {k: [] for k in (*result.rows[0], *common, "wall_time")}
        for r in result.rows:
            for k, v in {**r, **common, "wall_time": now}.items():
                cols[k].append(v)
        out["evals_part"] = write_table(ref.sweep_dir, "evals", ref.trial, cols)
    if result.energies is not None:
        from workloads.evaluation import energies as en

        n = len(result.energies["attack"])
        out["energy_summary"] = en.summarise(result.energies)
        tag = f"trial={ref.trial}-{ref.which}-{args.split}-eps{eps:g}"
        out["png"] = en.plot(result.energies, ref.sweep_dir / "eval_plots" / f"attack_energies-{tag}.png",
                             title=f"{cfg.method.name} ({ref.trial}, {ref.which}), {args.split} n={len(split)}, "
                                   f"eps {eps:g}")
        if not args.no_write:
            out["energies_part"] = write_table(ref.sweep_dir, "attack_energies", ref.trial,
                                               {**result.energies, "split": [args.split] * n,
                                                "checkpoint": [str(ref.checkpoint)] * n})
    return out


def _samples(n: int, total: int) -> str:
    return f"{n} images" if n == total else f"the first {n} of its {total} images"


def format_table(results: list[dict], attacks: list[str]) -> str:
    head_ = f"{'trial':<28} {'method':<9} {'ckpt':<5} {'eps':>6} {'n':>5}" + "".join(f" {a:>12}" for a in attacks)
    lines = [head_]
    for r in results:
        lines.append(f"{r['trial']:<28} {r['method']:<9} {r['which']:<5} {r['eps']:>6.3g} {r['n']:>5}"
                     + "".join(f" {r['acc'][a]:>12.4f}" for a in attacks))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from workloads.data import DatasetError

    try:
        if {"-h", "--help"} & set(argv):
            parser().print_help()
            return 0
        args = parser().parse_args(argv)
        _check(args)
        try:
            specs = parse_attacks(args.attacks)
        except ValueError as e:
            raise CheckpointError(f"--attacks: {e}") from None
        if args.energies:
            specs = with_energy_attacks(specs)
        refs = resolve(args.path, args.which)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        results = []
        for ref in refs:
            started = time.time()
            r = eval_one(ref, args, specs, device)
            results.append(r)
            print(f"evaluated {ref.checkpoint} in {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    except (CheckpointError, DatasetError) as e:
        print(f"energy-at eval: error: {e}", file=sys.stderr)
        return 2
    print(format_table(results, [s.name for s in specs]))
    for r in results:
        if "evals_part" in r:
            print(f"evals -> {r['evals_part']}")
        if "energy_summary" in r:
            from workloads.evaluation.energies import format_summary

            print(f"\nenergies of trial {r['trial']} (mean over samples):")
            print(format_summary(r["energy_summary"]))
            if "energies_part" in r:
                print(f"attack_energies -> {r['energies_part']}")
            print(f"figure -> {r['png']}")
    return 0
