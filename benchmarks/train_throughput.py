"""Images/s of one training epoch: energy-at (telemetry on) vs the papers'-style reference loop, in one run.

    python benchmarks/train_throughput.py                 # CPU: small CNN on Fashion-MNIST
    python benchmarks/train_throughput.py --gpu           # GPU: PreActResNet-18 on CIFAR-shaped data in memory

Each method family (single-step FGSM, PGD-10, TRADES, JEAT) runs one epoch of the
same model, data size and batch in three implementations, round-robin after a
warm-up round: the reference loop (benchmarks/reference_loop.py), energy-at in
fp32 (the default config) and energy-at's fast path (bf16 autocast for the
network, channels_last; `--fast` adds e.g. a torch.compile mode; `--variants ... graphs`
adds the fast path under CUDA graphs, `compile=reduce-overhead`). Telemetry is on
in both energy-at variants, whose trials are built on the whole training set (so
their default `telemetry.natural_every` is that of a real run) and time an epoch of
its first `--n` images; each ratio is energy-at / reference. On GPU the table also reports the
achieved TFLOP/s (FLOPs of the forward and backward passes of one step, counted by
torch.utils.flop_counter, times steps per second) against the device's measured
bf16 matmul rate.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_loop as ref  # noqa: E402
from orchestrator.config import compose_trial  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402
from workloads.data import Dataset, Split  # noqa: E402
from workloads.evaluation.checkpoint import build_from_config  # noqa: E402
from workloads.telemetry.writer import BLOCK  # noqa: E402
from workloads.trial import Trial  # noqa: E402

CIFAR_TRAIN = 49000  # CIFAR-10's training images less energy-at's default validation split

FAMILIES = {  # family -> (energy-at overrides, the reference loop's epoch(model, loader, opt, device, cfg, buffer))
    "fgsm": (["method=fgsm"], lambda m, d, o, dev, c, buf: ref.epoch_fgsm(m, d, o, dev, c.attack.eps)),
    "pgd10": (["method=pgd", "attack.steps=10"],
              lambda m, d, o, dev, c, buf: ref.epoch_pgd(m, d, o, dev, c.attack.eps, c.attack.eps / 4, c.attack.steps)),
    "trades": (["method=trades", "attack.steps=10"],
               lambda m, d, o, dev, c, buf: ref.epoch_trades(m, d, o, dev, c.attack.eps, c.attack.eps / 4,
                                                             c.attack.steps)),
    "jeat": (["method=jeat", "method.sgld_steps=20"],
             lambda m, d, o, dev, c, buf: ref.epoch_jeat(m, d, o, dev, c.attack.eps, buf, c.method.sgld_steps)),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_cifar(n: int, device) -> Dataset:
    """CIFAR-shaped random uint8 data generated in memory (no files needed on the GPU machine)."""
    g = torch.Generator().manual_seed(0)
    split = lambda k: Split(torch.randint(0, 256, (k, 3, 32, 32), generator=g, dtype=torch.uint8).to(device),  # noqa: E731
                            torch.randint(0, 10, (k,), generator=g).to(device), torch.arange(k).to(device))
    return Dataset("cifar10", 10, (3, 32, 32), split(n), split(256), split(256), split(256), augment=True)


def bf16_matmul_tflops(device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync(device)
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def first_batch(trial: Trial) -> tuple[torch.Tensor, torch.Tensor]:
    n = trial.cfg.batch_size
    return trial.data.train.images[:n].float() / 255, trial.data.train.labels[:n]


class Untracked(contextlib.nullcontext):
    """FlopCounterMode's module tracker, switched off: its backward hooks break torch.autograd.grad with respect
    to an input, as the attacks take it ('A leaf node was passed to _will_engine_execute_node'). The total
    needs no per-module breakdown: every op counts in the tracker's one parent, 'Global'."""

    parents = {"Global"}


def step_flops(trial: Trial) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, y = first_batch(trial)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = Untracked()
    with counter:
        trial.telemetry(0, 0.01, trial.optimise(x, y, 0.01))
    return counter.get_total_flops()


FAST = ["precision=bf16", "channels_last=true"]  # energy-at's fast path (bf16 network, fp32 energies and losses)
GRAPHS = [*FAST, "compile=reduce-overhead"]  # ... with the network's steps replayed as CUDA graphs
VARIANTS = ("reference", "fp32", "fast", "graphs")


def trial(family: str, overrides: list[str], out: str, data: Dataset | None, device, n: int) -> Trial:
    """A trial on the whole training set, so that what depends on the epoch's length (the default
    `telemetry.natural_every`) is as in a real run, whose timed epochs are its first n images."""
    cfg = compose_trial([*FAMILIES[family][0], *overrides, f"out={out}", "epochs=1"])
    t = Trial(replace(cfg, device=str(device)), data=data)
    s = t.data.train
    t.data = replace(t.data, train=Split(s.images[:n], s.labels[:n], s.ids[:n]))
    return t


def host_syncs(trial: Trial) -> str:
    """Run one block of steps (with telemetry, up to its batched energies) under CUDA's sync debug mode:
    'none', or the first sync it hit."""
    x, y = first_batch(trial)
    trial.log.flush()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(BLOCK):
            trial.telemetry(0, 0.01, trial.optimise(x, y, 0.01))
            trial.step += 1
        return "none"
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def run(family: str, args, device, overrides: list[str], batch: int, data: Dataset | None) -> dict:
    """img/s of one epoch for each of `args.variants` (the reference loop, energy-at fp32, energy-at's fast path,
    the fast path under CUDA graphs), alternating rounds."""
    overrides = [*overrides, f"batch_size={batch}"]
    with tempfile.TemporaryDirectory() as out:
        variants = {"fp32": overrides, "fast": [*overrides, *FAST, *args.fast], "graphs": [*overrides, *GRAPHS]}
        ours = {k: trial(family, o, f"{out}/{k}", data, device, args.n) for k, o in variants.items()
                if k in args.variants}
        cfg, d = next(iter(ours.values())).cfg, next(iter(ours.values())).data
        model = build_from_config(cfg, device)
        o = cfg.optim  # the method's optimiser (JEAT: Adam), with the reference code's plain (non-fused) update
        opt = (torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
               if o.name == "adam" else
               torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay))
        data_loader = ref.loader(d.train.images, d.train.labels, batch, args.workers)
        buffer = torch.rand(cfg.method.buffer_size, *d.shape)  # JEAT's replay buffer, the trial's size
        reference = lambda: FAMILIES[family][1](model, data_loader, opt, device, cfg, buffer)  # noqa: E731
        epochs = {**({"reference": reference} if "reference" in args.variants else {}),
                  **{k: (lambda r, t=t: t.train_epoch(r)) for k, t in ours.items()}}
        times: dict[str, list[float]] = {k: [] for k in epochs}
        for r in range(args.rounds + 1):  # round 0 warms up (and compiles) every variant
            for name, epoch in epochs.items():
                sync(device)
                t = time.perf_counter()
                epoch(r) if name != "reference" else epoch()
                sync(device)
                if r:
                    times[name].append(time.perf_counter() - t)
        row = {k: len(d.train) / min(v) for k, v in times.items()}
        if args.gpu and "fast" in ours:
            fast = ours["fast"]
            steps = math.ceil(len(fast.data.train) / fast.cfg.batch_size)  # of the timed epoch
            row["tflops"] = step_flops(fast) * steps / min(times["fast"]) / 1e12
            if device.type == "cuda":
                row["syncs"] = host_syncs(fast)
        return row


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="PreActResNet-18 on CIFAR-shaped data in GPU memory")
    ap.add_argument("--device", default=None, help="default: cuda with --gpu, else cpu (--gpu --device cpu: a "
                    "smoke run of the GPU set-up)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--n", type=int, default=None, help="training images per epoch")
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="batch sizes (default: 128 as in the papers; on GPU also 512)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (the papers use 2)")
    ap.add_argument("--fast", nargs="*", default=[], metavar="OVERRIDE",
                    help="extra overrides for the fast path only, e.g. compile=max-autotune-no-cudagraphs")
    ap.add_argument("--set", nargs="*", default=[], metavar="OVERRIDE", dest="overrides",
                    help="Hydra overrides for every energy-at variant (with --gpu, model=... replaces PreActResNet-18)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=["reference", "fp32", "fast"],
                    help="graphs: the fast path with compile=reduce-overhead (CUDA only)")
    ap.add_argument("--json", type=Path, default=None, help="append each row to this file as a JSON line")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if args.gpu else "cpu"))
    if args.gpu:
        args.n, args.batch = args.n or 10240, args.batch or [128, 512]
        given = {o.split("=", 1)[0] for o in args.overrides}
        overrides = [*(o for o in ("model=preact_resnet18", "attack=linf_cifar", "data=cifar10")
                       if o.split("=", 1)[0] not in given), *args.overrides]
        peak = bf16_matmul_tflops(device, 8192 if device.type == "cuda" else 1024)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{name}: measured bf16 matmul {peak:.1f} TFLOP/s")
    else:
        args.n, args.batch = args.n or 2048, args.batch or [128]
        overrides = args.overrides
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, n={args.n}, "
          f"overrides {overrides}, fast path {FAST + args.fast}")
    data = synthetic_cifar(CIFAR_TRAIN, device) if args.gpu else None  # one set for every run (trials slice it)
    base = args.variants[0]  # the ratios' denominator: the reference loop unless it is left out
    print(f"{'family':<8} {'batch':>5} " + " ".join(f"{v:>10} {'ratio':>6}" for v in args.variants)
          + ("  TFLOP/s  of peak" if args.gpu else "") + f"   (img/s; ratio to {base})")
    for batch in args.batch:
        for family in args.families:
            row = run(family, args, device, overrides, batch, data)
            line = f"{family:<8} {batch:>5} " + " ".join(f"{row[v]:>10.1f} {row[v] / row[base]:>6.2f}"
                                                         for v in args.variants)
            if "tflops" in row:
                line += f"  {row['tflops']:>7.1f}  {row['tflops'] / peak:>6.1%}  host syncs in a step: {row.get('syncs')}"
            print(line, flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps({"family": family, "batch": batch, "device": str(device), **row,
                                        **({"peak_tflops": peak} if args.gpu else {})}) + "\n")


if __name__ == "__main__":
    main()
