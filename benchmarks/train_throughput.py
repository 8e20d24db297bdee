"""Images/s of one training epoch: energy-at (telemetry on) vs the papers'-style reference loop, in one run.

    python benchmarks/train_throughput.py                 # CPU: small CNN on Fashion-MNIST
    python benchmarks/train_throughput.py --gpu           # GPU: PreActResNet-18 on CIFAR-shaped data in memory

Each method family (single-step FGSM, PGD-10, TRADES, JEAT) runs one epoch of the
same model, data size and batch in both implementations, alternating, after a
warm-up; the ratio is energy-at / reference. On GPU the table also reports the
achieved TFLOP/s (FLOPs of the forward and backward passes of one step, counted by
torch.utils.flop_counter, times steps per second) against the device's measured
bf16 matmul rate.
"""
from __future__ import annotations

import argparse
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
from workloads.data import DATASETS, Dataset, Split  # noqa: E402
from workloads.models import build_model  # noqa: E402
from workloads.trial import Trial  # noqa: E402

FAMILIES = {  # family -> (energy-at overrides, reference epoch function and kwargs)
    "fgsm": (["method=fgsm"], lambda m, d, o, dev, eps, buf: ref.epoch_fgsm(m, d, o, dev, eps)),
    "pgd10": (["method=pgd", "attack.steps=10"], lambda m, d, o, dev, eps, buf: ref.epoch_pgd(m, d, o, dev, eps, eps / 4, 10)),
    "trades": (["method=trades", "attack.steps=10"],
               lambda m, d, o, dev, eps, buf: ref.epoch_trades(m, d, o, dev, eps, eps / 4, 10)),
    "jeat": (["method=jeat", "method.sgld_steps=20"], lambda m, d, o, dev, eps, buf: ref.epoch_jeat(m, d, o, dev, eps, buf)),
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


def bf16_matmul_tflops(device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync(device)
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * 8192**3 * reps / (time.perf_counter() - t) / 1e12


def step_flops(trial: Trial) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, y = trial.data.train.images[: trial.cfg.batch_size].float() / 255, trial.data.train.labels[: trial.cfg.batch_size]
    with FlopCounterMode(display=False) as counter:
        trial.telemetry(trial.optimise(x, y, 0.01))
    return counter.get_total_flops()


def run(family: str, args, device, overrides: list[str]) -> dict:
    ours, ref_epoch = FAMILIES[family]
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_trial([*ours, *overrides, f"out={out}", f"batch_size={args.batch}", "epochs=1"])
        data = synthetic_cifar(args.n, device) if args.gpu else None
        trial = Trial(replace(cfg, device=str(device)), data=data)
        d = trial.data
        info = DATASETS[cfg.data.name]
        c, h, _ = d.shape
        model = build_model(cfg.model.name, d.num_classes, c, h, info.mean, info.std).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, weight_decay=5e-4)
        data_loader = ref.loader(d.train.images, d.train.labels, args.batch, args.workers)
        buffer = torch.rand(10000, *d.shape)
        n = len(d.train)
        times = {"energy-at": [], "reference": []}
        for r in range(args.rounds + 1):  # round 0 warms up both
            sync(device)
            t = time.perf_counter()
            trial.train_epoch(r)
            sync(device)
            if r:
                times["energy-at"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ref_epoch(model, data_loader, opt, device, cfg.attack.eps, buffer)
            sync(device)
            if r:
                times["reference"].append(time.perf_counter() - t)
        row = {k: n / min(v) for k, v in times.items()}
        if args.gpu:
            row["tflops"] = step_flops(trial) * trial.steps_per_epoch / min(times["energy-at"]) / 1e12
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="PreActResNet-18, CIFAR-shaped data, bf16, channels_last")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--n", type=int, default=None, help="training images per epoch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (the papers use 2)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu:
        args.n = args.n or 10240
        overrides = ["model=preact_resnet18", "attack=linf_cifar", "precision=bf16", "channels_last=true",
                     "data=cifar10", *args.overrides]
        peak = bf16_matmul_tflops(device)
        print(f"{torch.cuda.get_device_name()}: measured bf16 matmul {peak:.0f} TFLOP/s")
    else:
        args.n = args.n or 2048
        overrides = [f"data.subset={args.n}", *args.overrides]
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, n={args.n}, "
          f"batch {args.batch}, overrides {overrides}")
    print(f"{'family':<8} {'energy-at img/s':>16} {'reference img/s':>16} {'ratio':>7}" + ("  TFLOP/s  of peak" if args.gpu else ""))
    for family in args.families:
        row = run(family, args, device, overrides)
        line = f"{family:<8} {row['energy-at']:>16.1f} {row['reference']:>16.1f} {row['energy-at'] / row['reference']:>7.2f}"
        if args.gpu:
            line += f"  {row['tflops']:>7.1f}  {row['tflops'] / peak:>6.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
