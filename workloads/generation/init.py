"""Starting points of SGLD: uniform noise, the class mean, or a per-class PCA draw (docs/methods.md#sgld-init).

PCA (as in the WEAT code, without its bug): for each class, PCA of that class's
training images; keep the leading components whose explained variance first
reaches the requested fraction (at least one component);
x0 = mu_y + sum_i z_i * s_i * U_i  (z ~ N(0,1), s_i the component's std), clip01.
The WEAT code divides the fraction by 100 and so keeps zero components; here
`fraction` is a share in (0, 1] and `ClassPCA.retained` records what was kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from workloads.run_dir import atomic_write

INITS = ("noise", "mean", "pca")


@dataclass
class ClassPCA:
    shape: tuple[int, int, int]
    fraction: float  # requested retained-variance share
    mean: Tensor  # [K, D] class means in [0,1]
    components: list[Tensor]  # per class [k_c, D], orthonormal rows
    stds: list[Tensor]  # per class [k_c], std of the data along each component
    retained: Tensor  # [K] share of the class's total variance the kept components explain
    total_variance: Tensor  # [K] trace of the class covariance

    @property
    def num_components(self) -> list[int]:
        return [len(s) for s in self.stds]

    def sample(self, y: Tensor, scale: float = 1.0, generator: torch.Generator | None = None,
               clip: bool = True) -> Tensor:
        """One draw per label in y: mu_y + sum_i z_i s_i U_i (scale multiplies s_i)."""
        out = torch.empty(len(y), self.mean.shape[1])
        for c in y.unique().tolist():
            idx = (y == c).nonzero().squeeze(1).cpu()
            z = torch.randn(len(idx), len(self.stds[c]), generator=generator)
            out[idx] = self.mean[c] + (z * self.stds[c] * scale) @ self.components[c]
        x = out.view(len(y), *self.shape)
        return x.clamp_(0, 1) if clip else x

    def state_dict(self) -> dict:
        return {"shape": list(self.shape), "fraction": self.fraction, "mean": self.mean,
                "components": list(self.components), "stds": list(self.stds), "retained": self.retained,
                "total_variance": self.total_variance}

    @classmethod
    def from_state_dict(cls, d: dict) -> "ClassPCA":
        return cls(tuple(d["shape"]), float(d["fraction"]), d["mean"], list(d["components"]), list(d["stds"]),
                   d["retained"], d["total_variance"])


def fit_class_pca(images: Tensor, labels: Tensor, num_classes: int, fraction: float = 0.95) -> ClassPCA:
    """Per-class PCA of uint8 (or [0,1] float) images [N, C, H, W] keeping `fraction` of the variance."""
    if not 0 < fraction <= 1:
        raise ValueError(f"pca-variance must be a share in (0, 1] (0.95 keeps 95% of the variance), got {fraction}")
    x = images.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    x = x.flatten(1)
    labels = labels.detach().cpu()
    means, comps, stds, retained, totals = [], [], [], [], []
    for c in range(num_classes):
        xc = x[labels == c]
        if len(xc) < 2:
            raise ValueError(f"class {c} has {len(xc)} training images; PCA needs at least 2")
        mu = xc.mean(0)
        _, s, vh = torch.linalg.svd((xc - mu).double(), full_matrices=False)
        var = s**2 / (len(xc) - 1)
        total = var.sum()
        share = torch.cumsum(var, 0) / total
        k = int(torch.searchsorted(share, torch.tensor([fraction], dtype=share.dtype) - 1e-12).item()) + 1
        k = min(max(k, 1), len(var))
        means.append(mu)
        comps.append(vh[:k].float().contiguous())
        stds.append(var[:k].sqrt().float())
        retained.append(float(share[k - 1]))
        totals.append(float(total))
    return ClassPCA(tuple(images.shape[1:]), fraction, torch.stack(means), comps, stds,
                    torch.tensor(retained), torch.tensor(totals))


def cached_class_pca(cache: str | Path, images: Tensor, labels: Tensor, num_classes: int,
                     fraction: float) -> tuple[ClassPCA, bool]:
    """Load the PCA from `cache` if it exists (fitted with the same fraction), else fit and write it.

    Returns (pca, loaded_from_cache).
    """
    cache = Path(cache)
    if cache.exists():
        pca = ClassPCA.from_state_dict(torch.load(cache, weights_only=True))
        if abs(pca.fraction - fraction) < 1e-9:
            return pca, True
    pca = fit_class_pca(images, labels, num_classes, fraction)
    atomic_write(cache, lambda tmp: torch.save(pca.state_dict(), tmp))
    return pca, False


def initial(kind: str, y: Tensor, shape: tuple[int, int, int], class_means: Tensor | None = None,
            pca: ClassPCA | None = None, generator: torch.Generator | None = None, pca_scale: float = 1.0) -> Tensor:
    """x0 for labels y: 'noise' U(0,1), 'mean' the class mean image, 'pca' a per-class PCA draw."""
    if kind == "noise":
        return torch.rand(len(y), *shape, generator=generator)
    if kind == "mean":
        if class_means is None:
            raise ValueError("init 'mean' needs the class means")
        return class_means[y.cpu()].view(len(y), *shape).clone()
    if kind == "pca":
        if pca is None:
            raise ValueError("init 'pca' needs a fitted ClassPCA")
        return pca.sample(y.cpu(), scale=pca_scale, generator=generator)
    raise ValueError(f"init must be one of {INITS}, got {kind!r}")


def class_means(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[K, D] mean image of every class, in [0,1]."""
    x = images.detach().cpu()
    x = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).flatten(1)
    labels = labels.detach().cpu()
    return torch.stack([x[labels == c].mean(0) for c in range(num_classes)])
