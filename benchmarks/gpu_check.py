"""The steps of benchmarks/gpu_check.sh that are Python: each writes `<out>/<step>.json`, `summary` gathers them.

    python benchmarks/gpu_check.py info    OUT [--cpu]   # device, driver, torch/CUDA versions, bf16 matmul TFLOP/s
    python benchmarks/gpu_check.py data    OUT [--cpu]   # CIFAR-10-format files (the tests' writer) under OUT/cifar
    python benchmarks/gpu_check.py overrides OUT [--cpu] # prints the model and data overrides for those files
    python benchmarks/gpu_check.py sweep   OUT [--cpu]   # `energy-at sweep`: 4 trials packed on one device vs 1 alone
    python benchmarks/gpu_check.py energy  OUT [--cpu]   # the trial in bf16 vs fp32: de, de_y of its first steps
    python benchmarks/gpu_check.py summary OUT [--cpu]   # OUT/summary.json and OUT/summary.md from the steps' files
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAMILIES = ("fgsm", "pgd10", "trades", "jeat")  # train_throughput.py's
TELEMETRY_METHODS = {"gpu": ("fgsm", "rs_fgsm", "pgd", "trades", "jeat"), "cpu": ("fgsm", "pgd")}
BATCHES = {"gpu": (128, 512), "cpu": (16, 32)}  # train_throughput.py's steps, small and large batch
PACKED = 4  # trials sharing the device in the packed sweep
ENERGY_STEPS = 3  # first steps compared, bf16 vs fp32: after them the two runs' weights have drifted apart
# bf16 keeps 8 significant bits (rounding 2^-9 = 0.2%), compounded through the network's layers: the project
# holds E(x), E(x*) and the loss of a bf16 step to 2% + 0.02 of fp32 (tests/test_fast_path.py). dE = E(x) -
# E(x*) subtracts two energies of nearly the same size, so its error is of the energies' size, not of dE's:
# |dE_bf16 - dE_fp32| <= REL x mean |E| + ABS (de_y likewise, with the joint energies' similar size).
ENERGY_REL, ENERGY_ABS = 0.02, 0.02


def data_overrides(cpu: bool, cifar: Path) -> list[str]:
    """Model and data of every step that reads the CIFAR-10 files (`data`)."""
    size = (["model=small_cnn", "data.val_size=32", "data.probe_size=16", "data.test_size=32"] if cpu else
            ["model=preact_resnet18", "data.val_size=500", "data.probe_size=128", "data.test_size=500"])
    return ["data=cifar10", f"data.root={cifar}", "attack=linf_cifar", *size]


def trial_overrides(cpu: bool, cifar: Path) -> list[str]:
    """The short trial of the sweep and of the bf16/fp32 comparison (FGSM: f(x) logged at every step)."""
    size = ["epochs=1", "batch_size=32", "eval.pgd_steps=2"] if cpu else ["epochs=2", "batch_size=128",
                                                                          "eval.pgd_steps=5"]
    return [*data_overrides(cpu, cifar), "method=fgsm", *size]


def cifar_dir(out: Path) -> Path:
    return out / "cifar"


def device_of(cpu: bool) -> str:
    return "cpu" if cpu else "cuda"


def write(out: Path, step: str, result: dict) -> None:
    (out / f"{step}.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))


# ---------------------------------------------------------------- steps

def info(out: Path, cpu: bool) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import bf16_matmul_tflops

    device = torch.device(device_of(cpu))
    smi = shutil.which("nvidia-smi")
    query = "--query-gpu=name,driver_version,memory.total"
    gpu = (subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
           if smi else "no nvidia-smi")
    write(out, "info", {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "nvidia_smi": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "figures": {"matmul_bf16_tflops": bf16_matmul_tflops(device, 1024 if cpu else 8192)}})


def data(out: Path, cpu: bool) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import make_cifar10

    folder = cifar_dir(out) / "cifar-10-batches-py"
    shutil.rmtree(folder, ignore_errors=True)
    per_batch = 40 if cpu else 2000  # 5 training batches, as CIFAR-10's files
    make_cifar10(folder, per_batch=per_batch, n_test=64 if cpu else 500)
    write(out, "data", {"root": str(cifar_dir(out)), "train_images": 5 * per_batch})


def energy_at(*args: str) -> float:
    """`energy-at ARGS` in this process (its output goes to the step's log); wall seconds. Two sweeps in one
    process share one embedded Ray (`SweepPlan.run_here` starts it once): the second skips Ray's start."""
    from orchestrator.cli import main

    print(f"$ energy-at {' '.join(args)}", flush=True)
    t = time.perf_counter()
    if rc := main(list(args)):
        raise SystemExit(f"energy-at {args[0]} exited {rc}")
    return time.perf_counter() - t


def training_span(out: Path) -> float:
    """Seconds from the first step issued to the last epoch row written, over every trial of a sweep
    (leaves out Ray's start and the trials' start-up, the same for both sweeps)."""
    import polars as pl

    from analysis.read import SweepLogs

    logs = SweepLogs(out, warn=False)
    first = logs.scan("batches").select(pl.col("wall_time").min()).collect().item()
    last = logs.scan("epochs").select(pl.col("wall_time").max()).collect().item()
    return last - first


def sweep(out: Path, cpu: bool) -> None:
    """`energy-at sweep` of PACKED trials (seeds 0..3) sharing one device against seed 0 alone.

    GPU: sweep.resources.gpus=1/PACKED, so Ray places all of them on the one GPU; CPU: cpus=2/PACKED on
    2 cores. Packing gain = PACKED x (time of 1 alone) / (time of PACKED packed), over the trials' training
    spans; the commands' wall times are reported too (the first one includes Ray's start)."""
    share = ([f"sweep.resources.cpus={2 / PACKED}"] if cpu else
             ["sweep.resources.cpus=1", f"sweep.resources.gpus={1 / PACKED}"])
    common = [*trial_overrides(cpu, cifar_dir(out)), f"device={device_of(cpu)}", "precision=bf16",
              "sweep.trial=[]", "sweep.stop_on=[]", *share]
    runs = {"alone": ("seed=0", "sweep.report=false"),
            "packed": (f"seed={','.join(map(str, range(PACKED)))}", "sweep.report=true")}
    result: dict = {"figures": {}}
    for name, (seeds, report) in runs.items():
        folder = out / f"sweep_{name}"
        shutil.rmtree(folder, ignore_errors=True)
        wall = energy_at("sweep", *common, seeds, report, f"sweep.name={name}", f"sweep.out={folder}")
        result["figures"] |= {f"sweep_{name}_wall_s": wall, f"sweep_{name}_training_s": training_span(folder)}
    f = result["figures"]
    f["packing_gain"] = PACKED * f["sweep_alone_training_s"] / f["sweep_packed_training_s"]
    f["report_written"] = float((out / "sweep_packed" / "report.html").is_file())
    result["overrides"] = [*common, runs["packed"][0]]
    write(out, "sweep", result)


def energy(out: Path, cpu: bool) -> None:
    """The same trial (seed 0) trained in bf16 and in fp32: |de| and |de_y| differences of its first steps."""
    import polars as pl

    from analysis.read import SweepLogs

    rows = {}
    for precision in ("fp32", "bf16"):
        folder = out / f"energy_{precision}"
        shutil.rmtree(folder, ignore_errors=True)
        energy_at("train", *trial_overrides(cpu, cifar_dir(out)), f"device={device_of(cpu)}", "seed=0",
                  f"precision={precision}", "stop_on=[]", f"out={folder}")
        rows[precision] = (SweepLogs(folder, warn=False).scan("batches").sort("step").head(ENERGY_STEPS)
                           .select("step", "e_nat", "e_adv", "de", "de_y").collect())
    a, b = rows["fp32"], rows["bf16"]
    assert a["step"].to_list() == b["step"].to_list() == list(range(ENERGY_STEPS)), (a, b)
    scale = a.select(((pl.col("e_nat").abs() + pl.col("e_adv").abs()) / 2).max()).item()
    tolerance = ENERGY_REL * scale + ENERGY_ABS
    diff = {c: (a[c] - b[c]).abs().max() for c in ("de", "de_y")}
    write(out, "energy", {
        "fp32": a.to_dicts(), "bf16": b.to_dicts(),
        "rule": f"max over the first {ENERGY_STEPS} steps of |bf16 - fp32| <= {ENERGY_REL} x max mean |E| "
                f"({scale:.3f}) + {ENERGY_ABS}",
        "figures": {"energy_de_max_abs_diff": diff["de"], "energy_de_y_max_abs_diff": diff["de_y"],
                    "energy_tolerance": tolerance,
                    "energy_within_tolerance": float(max(diff.values()) <= tolerance)}})


# ---------------------------------------------------------------- summary

def expected(cpu: bool) -> dict[str, str | None]:
    """Every figure the check reports -> None, or why it is not measured in this mode (then null)."""
    mode = "cpu" if cpu else "gpu"
    keys: dict[str, str | None] = {"matmul_bf16_tflops": None}
    graphs_skip = "compile=reduce-overhead records CUDA graphs: refused on CPU (workloads/config.py validate)"
    sync_skip = "CPU: no device to sync with; CUDA sync debug mode not checked"
    for batch in BATCHES[mode]:
        for family in FAMILIES:
            for variant in ("reference", "fp32", "fast"):
                keys[f"train_b{batch}_{family}_{variant}_img_s"] = None
            keys[f"train_b{batch}_{family}_fast_tflops"] = None
            keys[f"train_b{batch}_{family}_host_syncs"] = sync_skip if cpu else None
    for family in ("fgsm", "pgd10"):
        keys[f"train_graphs_b128_{family}_fast_img_s"] = graphs_skip if cpu else None
        keys[f"train_graphs_b128_{family}_graphs_img_s"] = graphs_skip if cpu else None
    for method in TELEMETRY_METHODS[mode]:
        keys[f"telemetry_{method}_overhead"] = None
        keys[f"telemetry_{method}_host_syncs"] = sync_skip if cpu else None
    for k in ("sweep_alone_wall_s", "sweep_packed_wall_s", "sweep_alone_training_s", "sweep_packed_training_s",
              "packing_gain", "report_written", "energy_de_max_abs_diff",
              "energy_de_y_max_abs_diff", "energy_tolerance", "energy_within_tolerance"):
        keys[k] = None
    return keys


def throughput_figures(path: Path, prefix: str) -> dict[str, float]:
    """train_throughput.py --json rows -> figures (host syncs: 0 for 'none', 1 for a sync it hit)."""
    figures: dict[str, float] = {}
    for row in map(json.loads, path.read_text().splitlines()):
        key = f"{prefix}_b{row['batch']}_{row['family']}"
        for variant in ("reference", "fp32", "fast", "graphs"):
            if variant in row:
                figures[f"{key}_{variant}_img_s"] = row[variant]
        if "tflops" in row:
            figures[f"{key}_fast_tflops"] = row["tflops"]
        if "syncs" in row:
            figures[f"{key}_host_syncs"] = float(row["syncs"] != "none")
    return figures


def summary(out: Path, cpu: bool) -> int:
    """summary.json / summary.md from the steps' files; 1 if a figure is missing, a training step synced with
    the host or the bf16 energies left the tolerance."""
    steps = json.loads((out / "steps.json").read_text()) if (out / "steps.json").is_file() else {}
    figures: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for step in ("info", "sweep", "energy"):
        if (out / f"{step}.json").is_file():
            figures |= json.loads((out / f"{step}.json").read_text())["figures"]
    for path in sorted(out.glob("throughput*.jsonl")):
        figures |= throughput_figures(path, "train_graphs" if "graphs" in path.name else "train")
    if (out / "telemetry.json").is_file():
        for method, row in json.loads((out / "telemetry.json").read_text()).items():
            figures[f"telemetry_{method}_overhead"] = row["overhead"]
            figures[f"telemetry_{method}_host_syncs"] = row["host_syncs"]
    want = expected(cpu)
    for key, why in want.items():
        if why is not None:
            figures.setdefault(key, None)
            notes[key] = why
    missing = [k for k in want if not isinstance(figures.get(k), (int, float)) and k not in notes]
    syncs = [k for k, v in figures.items() if k.endswith("host_syncs") and v]
    energy_ok = figures.get("energy_within_tolerance") != 0
    info = json.loads((out / "info.json").read_text()) if (out / "info.json").is_file() else {}
    result = {"mode": "cpu" if cpu else "gpu", "info": {k: v for k, v in info.items() if k != "figures"},
              "steps": steps, "missing": missing, "host_syncs_found": syncs, "energy_within_tolerance": energy_ok,
              "skipped": notes,
              "figures": {k: figures.get(k) for k in [*want, *sorted(set(figures) - set(want))]}}
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    lines = [f"# gpu_check ({result['mode']})", "", *(f"- {k}: {v}" for k, v in result["info"].items()), "",
             "| step | exit |", "|---|---|", *(f"| {k} | {v} |" for k, v in steps.items()), "",
             "| figure | value | note |", "|---|---|---|",
             *(f"| {k} | {'' if v is None else f'{v:.4g}'} | {notes.get(k, '')} |"
               for k, v in result["figures"].items()),
             "", f"missing: {', '.join(missing) or 'none'}; host syncs in training steps: {', '.join(syncs) or 'none'}; "
             f"bf16 energies within tolerance of fp32: {'yes' if energy_ok else 'NO'}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if missing or syncs or not energy_ok else 0


def main() -> int:
    from workloads.config import OneLineParser

    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("info", "data", "overrides", "sweep", "energy", "summary"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        return summary(args.out, args.cpu)
    if args.step == "overrides":  # for the shell script: the model and data overrides of this mode
        print(" ".join(data_overrides(args.cpu, cifar_dir(args.out))))
        return 0
    globals()[args.step](args.out, args.cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
