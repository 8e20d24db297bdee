"""Generation metrics: IS / FID / KID through torch-fidelity, and the JEAT Fisher scores (eq. 23/24).

Feature extractors for IS/FID/KID:
  * "inception": torch-fidelity's Inception-v3 as usual (downloads its weights, or reads
    `inception_weights`, torch-fidelity's `feature_extractor_weights_path`). Comparable
    to published numbers (given the same sample counts).
  * "classifier": a feature extractor registered with torch-fidelity
    (`torch_fidelity.register_feature_extractor`) that wraps an energy-at classifier
    trained on the same dataset: its penultimate features for FID/KID, its logits for
    IS. Works offline, but the numbers are NOT comparable to published Inception scores
    (nor across different wrapped classifiers).
"""
from __future__ import annotations

import copy
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import workloads.torchvision_compat  # noqa: F401  (torch_fidelity imports torchvision)
from workloads.energy import joint_energy, marginal_energy

NOT_COMPARABLE = ("NOTE: IS/FID/KID below use features of an energy-at classifier ({name}), not Inception-v3; "
                  "they are NOT comparable to published Inception Score / FID / KID values, only to each other "
                  "when computed with the same classifier, reference set and sample counts.")
CLASSIFIER_EXTRACTOR = "energy-at-classifier"
EXTRACTORS = ("auto", "inception", "classifier")

_WRAPPED: dict[str, nn.Module] = {}  # registered extractor name -> classifier it wraps


def _fidelity():
    import torch_fidelity

    return torch_fidelity


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the classifier has no nn.Linear head to take penultimate features from")
    return linears[-1]


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class ClassifierFeatures(FeatureExtractorBase):
        """torch-fidelity feature extractor around an energy-at classifier: 'penultimate' (input of the
        last Linear layer) for FID/KID and 'logits' for IS. Takes uint8 [B, C, H, W] like the Inception one."""

        FEATURES = ("penultimate", "logits")

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            # a copy: torch-fidelity calls requires_grad_(False) / eval() / cuda() on the extractor
            self.net = copy.deepcopy(_WRAPPED[name]).float().eval()
            self._penultimate: Tensor | None = None
            _last_linear(self.net).register_forward_hook(self._keep_input)

        def _keep_input(self, module, inputs, output):
            self._penultimate = inputs[0]

        @staticmethod
        def get_provided_features_list():
            return ClassifierFeatures.FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits" if metric == "isc" else "penultimate"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            logits = self.net(x)
            feats = {"penultimate": self._penultimate.flatten(1), "logits": logits}
            return tuple(feats[k].float() for k in self.features_list)

    return ClassifierFeatures


_CLASS = None


def register_classifier_extractor(model: nn.Module, name: str = CLASSIFIER_EXTRACTOR) -> str:
    """Register (or re-point) the torch-fidelity feature extractor `name` to wrap `model`; returns name."""
    global _CLASS
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    _CLASS = _CLASS or _extractor_class()
    _WRAPPED[name] = model
    registered = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if registered is None:
        _fidelity().register_feature_extractor(name, _CLASS)
    elif registered is not _CLASS:
        raise ValueError(f"a different torch-fidelity feature extractor is registered as {name!r}")
    return name


class _Images(torch.utils.data.Dataset):
    """uint8 images for torch-fidelity (optionally gray -> RGB for Inception)."""

    def __init__(self, x: Tensor, rgb: bool = False):
        x = x.detach().cpu()
        self.x = x if x.dtype == torch.uint8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if rgb and self.x.shape[1] == 1:
            self.x = self.x.expand(-1, 3, -1, -1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def inception_available(weights: str | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    """Can torch-fidelity's Inception be used here? (weights file given, cached, or the network reachable)."""
    if weights:
        return Path(weights).is_file(), f"weights file {weights}"
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    cached = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    if cached.is_file():
        return True, f"cached weights {cached}"
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True, "download from github.com"
    except OSError:
        return False, "offline (github.com unreachable) and no local Inception weights"


@dataclass
class Fidelity:
    metrics: dict[str, float]
    extractor: str  # 'inception' or 'classifier'
    comparable: bool  # comparable to published (Inception) numbers
    note: str


def fidelity(samples: Tensor, reference: Tensor, extractor: str = "auto", classifier: nn.Module | None = None,
             classifier_name: str = "classifier", inception_weights: str | None = None, isc: bool = True,
             fid: bool = True, kid: bool = True, batch_size: int = 200, device: torch.device | str = "cpu",
             kid_subset_size: int = 1000) -> Fidelity:
    """IS (of `samples`), FID and KID (samples vs `reference` images), through torch-fidelity.

    samples/reference: [N, C, H, W] in [0,1] (float) or uint8.
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"extractor must be one of {EXTRACTORS}, got {extractor!r}")
    if extractor == "auto":
        ok, why = inception_available(inception_weights)
        extractor = "inception" if ok else "classifier"
        note = f"feature extractor: {'Inception-v3 (' + why + ')' if ok else 'classifier, because ' + why}"
    else:
        note = f"feature extractor: {extractor}"
    cuda = torch.device(device).type == "cuda"
    n1, n2 = len(samples), len(reference)
    kwargs: dict = dict(isc=isc, fid=fid, kid=kid, cuda=cuda, batch_size=batch_size, verbose=False, cache=False,
                        save_cpu_ram=True, isc_splits=max(1, min(10, n1 // 2)),
                        kid_subset_size=max(2, min(kid_subset_size, n1, n2)))
    if extractor == "inception":
        kwargs["feature_extractor"] = "inception-v3-compat"
        if inception_weights:
            kwargs["feature_extractor_weights_path"] = inception_weights
        rgb, comparable = True, True
    else:
        if classifier is None:
            raise ValueError("the classifier feature extractor needs a classifier")
        kwargs.update(feature_extractor=register_classifier_extractor(classifier), feature_layer_isc="logits",
                      feature_layer_fid="penultimate", feature_layer_kid="penultimate")
        rgb, comparable = False, False
        note += "\n" + NOT_COMPARABLE.format(name=classifier_name)
    metrics = _fidelity().calculate_metrics(input1=_Images(samples, rgb), input2=_Images(reference, rgb), **kwargs)
    return Fidelity({k: float(v) for k, v in metrics.items()}, extractor, comparable, note)


# --- Fisher scores --------------------------------------------------------------------------------

def fisher_scores(model: nn.Module, x: Tensor, y: Tensor, probes: int = 4, batch_size: int = 250,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Joint and Marginal Fisher Scores (JEAT eq. 23/24) on data samples (x, y):

        JFS = E_{p_data(x|y)} [ 0.5 ||grad_x E(x,y)||^2 - tr(hess_x E(x,y)) ]
        MFS = E_{p_data(x)}   [ 0.5 ||grad_x E(x)||^2   - tr(hess_x E(x))   ]

    The Hessian traces are Hutchinson estimates, tr(H) ~ mean_r v_r^T H v_r with Rademacher
    v_r (`probes` per sample), each H v from a double backward. Lower is better. For piecewise
    linear networks (ReLU, max-pool) hess_x E(x,y) is 0 almost everywhere, so JFS reduces to the
    gradient term; E(x) keeps the curvature of logsumexp.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("jfs", "mfs", "grad_joint", "trace_joint",
                                                        "grad_marginal", "trace_marginal")}
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].detach().float(), y[i:i + batch_size]
        for kind in ("joint", "marginal"):
            with torch.enable_grad():
                xg = xb.clone().requires_grad_(True)
                logits = model(xg)
                e = joint_energy(logits, yb) if kind == "joint" else marginal_energy(logits)
                (g,) = torch.autograd.grad(e.sum(), xg, create_graph=True)
                grad_term = 0.5 * g.flatten(1).pow(2).sum(1)
                trace = torch.zeros(len(xb), device=xb.device)
                for r in range(probes if g.requires_grad else 0):  # no graph: the Hessian is 0
                    v = torch.randint(0, 2, xb.shape, generator=generator).to(xb.device, xb.dtype) * 2 - 1
                    (hv,) = torch.autograd.grad((g * v).sum(), xg, retain_graph=r < probes - 1, allow_unused=True)
                    if hv is not None:
                        trace += (hv * v).flatten(1).sum(1)
                trace /= probes
            parts[f"grad_{kind}"].append(grad_term.detach())
            parts[f"trace_{kind}"].append(trace.detach())
            parts["jfs" if kind == "joint" else "mfs"].append((grad_term - trace).detach())
    model.train(was_training)
    return {k: torch.cat(v).mean().item() for k, v in parts.items()}
