"""`energy-at generate`: class-conditional SGLD samples from a trained classifier (JEAT eq. 16/17).

Writes <out>/grid.png (one row per class), <out>/samples.pt (samples, labels,
energies, settings) and, with --metrics, <out>/metrics.json (IS/FID/KID through
torch-fidelity, Joint/Marginal Fisher Scores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from workloads.evaluation.checkpoint import CheckpointError, TrialRef, load_model, load_trial, resolve, trial_data
from workloads.evaluation.cli import CommandParser, check_run_options
from workloads.generation.init import INITS, cached_class_pca, class_means, initial
from workloads.generation.sgld import ENERGIES, SGLDConfig, sgld
from workloads.trial import resolve_device

USAGE = "energy-at generate <checkpoint.pt | trial dir> [options]"


def parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="energy-at generate", usage=USAGE, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="checkpoint .pt, <out>/checkpoints/trial=<id>, or a one-trial train out dir")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--n-per-class", type=int, default=10)
    p.add_argument("--classes", default=None, help="comma list of class indices (default: all)")
    p.add_argument("--steps", type=int, default=100, help="SGLD steps (default 100)")
    p.add_argument("--step-size", type=float, default=1.0, help="eta: x -= eta/2 * grad (default 1.0)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="std of the Gaussian noise per step (default 0.01; eq. 17 exactly: sqrt(step size))")
    p.add_argument("--energy", default="joint", choices=ENERGIES,
                   help="joint: E(x,y) (JEAT eq. 17); ce: E(x,y)-E(x) = CE (eq. 16)")
    p.add_argument("--momentum", type=float, default=0.0, help="v = momentum*v - eta/2*grad; x += v + noise")
    p.add_argument("--clip-grad", type=float, default=None, help="per-sample L2 bound on each step's gradient")
    p.add_argument("--init", default="noise", choices=INITS)
    p.add_argument("--pca-variance", type=float, default=0.95, help="retained-variance share of the PCA init")
    p.add_argument("--pca-scale", type=float, default=1.0, help="multiplies the PCA component stds")
    p.add_argument("--out", default=None, help="output folder (default <sweep>/generated/<trial>-<settings>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", action="store_true", help="IS/FID/KID (torch-fidelity) and Fisher scores")
    m.add_argument("--extractor", default="auto", choices=("auto", "inception", "classifier"),
                   help="auto: Inception if its weights are local or downloadable, else the classifier")
    m.add_argument("--inception-weights", default=None, help="local Inception weights (feature_extractor_weights_path)")
    m.add_argument("--metrics-classifier", default=None,
                   help="checkpoint/trial dir of the classifier whose features replace Inception "
                        "(default: the generating model itself)")
    m.add_argument("--reference-n", type=int, default=10000, help="real test images for FID/KID (default 10000)")
    m.add_argument("--fisher-n", type=int, default=500, help="test images for the Fisher scores")
    m.add_argument("--fisher-probes", type=int, default=4, help="Hutchinson probes per sample")
    return p


def _check(a: argparse.Namespace) -> None:
    for name in ("n_per_class", "batch_size", "reference_n", "fisher_n", "fisher_probes"):
        if getattr(a, name) < 1:
            raise CheckpointError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(a, name)}")
    if not 0 < a.pca_variance <= 1:
        raise CheckpointError(f"--pca-variance: must be a share in (0, 1] (0.95 keeps 95%), got {a.pca_variance}")
    if a.pca_scale <= 0:
        raise CheckpointError(f"--pca-scale: must be positive, got {a.pca_scale}")
    check_run_options(a)
    try:
        SGLDConfig(a.steps, a.step_size, a.noise, a.energy, a.momentum, a.clip_grad).validate()
    except ValueError as e:
        raise CheckpointError(f"--{e}") from None


def _one(path: str, which: str) -> TrialRef:
    refs = resolve(path, which)
    if len(refs) != 1:
        raise CheckpointError(f"{path} holds {len(refs)} trials ({', '.join(r.trial for r in refs[:4])}, ...); "
                              f"pass one trial's checkpoint or folder")
    return refs[0]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


def pca_cache_path(ref: TrialRef, cfg, fraction: float, out: Path) -> Path:
    """Next to the checkpoint (shared by every generate run of the trial), else in the out dir."""
    d = cfg.data
    name = f"pca-{d.name}-seed{cfg.seed}-val{d.val_size}-sub{d.subset or 'all'}-var{fraction:g}.pt"
    folder = ref.checkpoint.parent
    return (folder if _writable(folder) else out) / name


def main(argv: list[str]) -> int:
    from workloads.data import DatasetError

    try:
        if {"-h", "--help"} & set(argv):
            parser().print_help()
            return 0
        a = parser().parse_args(argv)
        _check(a)
        ref = _one(a.path, a.which)
        metrics_ref = _one(a.metrics_classifier, a.which) if a.metrics and a.metrics_classifier else None
        if a.threads:
            torch.set_num_threads(a.threads)
        device = resolve_device(a.device)
        model, cfg, meta = load_trial(ref, device)
        data = trial_data(cfg, device)
        k = data.num_classes
        if a.classes:
            try:
                classes = [int(c) for c in a.classes.split(",")]
            except ValueError:
                raise CheckpointError(f"--classes: expected comma-separated integers, got {a.classes!r}") from None
            bad = [c for c in classes if not 0 <= c < k]
            if bad:
                raise CheckpointError(f"--classes: {bad} outside 0..{k - 1}")
        else:
            classes = list(range(k))
        tag = f"trial={ref.trial}-{ref.which}-{a.energy}-{a.init}-steps{a.steps}"
        out = Path(a.out) if a.out else ref.sweep_dir / "generated" / tag
        if not _writable(out):
            raise CheckpointError(f"--out: cannot write to {out}")
    except (CheckpointError, DatasetError) as e:
        print(f"energy-at generate: error: {e}", file=sys.stderr)
        return 2

    started = time.time()
    gen = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    y = torch.tensor(classes).repeat_interleave(a.n_per_class)
    shape = data.shape
    pca, means, pca_info = None, None, {}
    if a.init == "pca":
        cache = pca_cache_path(ref, cfg, a.pca_variance, out)
        pca, loaded = cached_class_pca(cache, data.train.images, data.train.labels, k, a.pca_variance)
        pca_info = {"pca_cache": str(cache), "pca_components": pca.num_components,
                    "pca_retained": [round(float(r), 4) for r in pca.retained]}
        print(f"PCA init: {'loaded' if loaded else 'fitted and cached'} {cache}; components per class "
              f"{pca.num_components} (retained {min(pca.retained):.3f}..{max(pca.retained):.3f} of the variance)")
    elif a.init == "mean":
        means = class_means(data.train.images, data.train.labels, k)
    scfg = SGLDConfig(a.steps, a.step_size, a.noise, a.energy, a.momentum, a.clip_grad)
    xs, e0, e1, traces = [], [], [], []
    for i in range(0, len(y), a.batch_size):
        yb = y[i:i + a.batch_size]
        x0 = initial(a.init, yb, shape, class_means=means, pca=pca, generator=gen, pca_scale=a.pca_scale)
        r = sgld(model, x0.to(device), yb.to(device), scfg, generator=gen)
        xs.append(r.x.cpu())
        e0.append(r.energy_start.cpu())
        e1.append(r.energy_end.cpu())
        traces.append(r.trace)
    x = torch.cat(xs)
    energy_start, energy_end = torch.cat(e0), torch.cat(e1)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + a.batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(x), a.batch_size)])
    from workloads.generation.grid import save_grid

    grid = save_grid(x, out / "grid.png", rows=len(classes))
    settings = {"checkpoint": str(ref.checkpoint), "trial": ref.trial, "method": cfg.method.name,
                "checkpoint_epoch": meta.get("epoch"), "dataset": cfg.data.name, "classes": classes,
                "n_per_class": a.n_per_class, "steps": a.steps, "step_size": a.step_size, "noise": a.noise,
                "energy": a.energy, "momentum": a.momentum, "clip_grad": a.clip_grad, "init": a.init,
                "pca_variance": a.pca_variance if a.init == "pca" else None, "seed": a.seed, **pca_info}
    torch.save({"x": x, "y": y, "pred": pred, "energy_start": energy_start, "energy_end": energy_end,
                "trace": torch.tensor(traces).mean(0) if traces else torch.tensor([]),
                "settings": json.dumps(settings)}, out / "samples.pt")
    label = "E(x,y)" if a.energy == "joint" else "CE"
    print(f"generated {len(x)} samples ({a.n_per_class} per class x {len(classes)} classes) from {cfg.method.name} "
          f"trial {ref.trial} ({ref.which}.pt) in {time.time() - started:.1f} s")
    print(f"mean {label}: {energy_start.mean():.3f} at the start -> {energy_end.mean():.3f} after {a.steps} steps; "
          f"classified as their class: {(pred == y).float().mean():.3f}")
    print(f"grid    -> {grid}  (one row per class: {classes})")
    print(f"samples -> {out / 'samples.pt'}")
    if a.metrics:
        try:
            report = metrics(a, model, cfg, data, x, device, metrics_ref, settings)
        except CheckpointError as e:
            print(f"energy-at generate: error: {e}", file=sys.stderr)
            return 2
        (out / "metrics.json").write_text(json.dumps(report, indent=1))
        print(f"metrics -> {out / 'metrics.json'}")
    return 0


def metrics(a: argparse.Namespace, model, cfg, data, x: torch.Tensor, device: torch.device,
            metrics_ref: TrialRef | None, settings: dict) -> dict:
    from workloads.generation.metrics import fidelity, fisher_scores

    if metrics_ref is not None:
        mcfg = metrics_ref.config()
        if mcfg.data.name != cfg.data.name:
            raise CheckpointError(f"--metrics-classifier was trained on {mcfg.data.name}, not {cfg.data.name}")
        classifier, _ = load_model(metrics_ref.checkpoint, mcfg, device)
        classifier_name = f"{mcfg.method.name} trial {metrics_ref.trial}"
    else:
        classifier, classifier_name = model, f"the generating model itself, {cfg.method.name} trial"
    full = trial_data(cfg, device, test_size=None)
    reference = full.test.images[: a.reference_n].cpu()
    fid = fidelity(x, reference, a.extractor, classifier, classifier_name, a.inception_weights, device=device)
    print(fid.note)
    m = fid.metrics
    print(f"IS {m.get('inception_score_mean', float('nan')):.4f} +- {m.get('inception_score_std', float('nan')):.4f}"
          f"   FID {m.get('frechet_inception_distance', float('nan')):.4f}"
          f"   KID {m.get('kernel_inception_distance_mean', float('nan')):.5f}"
          f"   ({len(x)} samples vs {len(reference)} real test images, extractor: {fid.extractor})")
    n = min(a.fisher_n, len(full.test))
    fs = fisher_scores(model, full.test.images[:n].float() / 255, full.test.labels[:n], probes=a.fisher_probes,
                       generator=torch.Generator().manual_seed(a.seed))
    print(f"Fisher scores on {n} test images ({a.fisher_probes} Hutchinson probes): JFS {fs['jfs']:.4f}   "
          f"MFS {fs['mfs']:.4f}   (lower is better)")
    return {**settings, "fidelity": m, "extractor": fid.extractor, "comparable_to_published": fid.comparable,
            "extractor_note": fid.note, "samples": len(x), "reference_n": len(reference),
            "fisher": fs, "fisher_n": n, "fisher_probes": a.fisher_probes}
