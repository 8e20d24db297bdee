"""Generation: SGLD on real trained classifiers, PCA init, torch-fidelity metrics, Fisher scores, the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from support.trained import trained, trial_of
from torch import nn

from workloads.data import load_dataset
from workloads.generation import SGLDConfig, cached_class_pca, fit_class_pca, initial, sgld


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion_mnist", subset=3000, val_size=300, probe_size=16, test_size=1000, seed=0)


def _model(method: str = "erm"):
    from workloads.evaluation import load_trial, resolve

    model, _, _ = load_trial(resolve(trained(method), which="last")[0])
    return model


def test_torchvision_compat_makes_fidelity_importable():
    import workloads.torchvision_compat as compat

    tv = compat.ensure_torchvision()
    import torch_fidelity  # noqa: F401

    grid = tv.utils.make_grid(torch.rand(4, 1, 28, 28), nrow=2)
    assert grid.shape[0] == 3  # the Python parts work
    if compat.PATCHED:  # the C++ ops still do not
        with pytest.raises(Exception):
            tv.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.95])
def test_pca_keeps_the_requested_share_of_variance(fmnist, fraction):
    pca = fit_class_pca(fmnist.train.images, fmnist.train.labels, 10, fraction)
    assert all(k >= 1 for k in pca.num_components)
    assert (pca.retained >= fraction - 1e-6).all()
    x = fmnist.train.images.float().flatten(1) / 255
    for c in (0, 5):
        xc = x[fmnist.train.labels == c]
        # minimal: one component fewer would keep less than asked
        var = torch.linalg.svdvals((xc - xc.mean(0)).double()) ** 2 / (len(xc) - 1)
        k = pca.num_components[c]
        assert var[:k].sum() / var.sum() >= fraction - 1e-6
        assert k == 1 or var[: k - 1].sum() / var.sum() < fraction
        # draws (unclipped) carry the kept variance around the class mean
        y = torch.full((4000,), c)
        draws = pca.sample(y, generator=torch.Generator().manual_seed(0), clip=False).flatten(1)
        share = draws.var(0).sum() / pca.total_variance[c]
        assert abs(share - pca.retained[c]) < 0.05, (share, pca.retained[c])
        assert torch.allclose(draws.mean(0), pca.mean[c], atol=0.05)
    with pytest.raises(ValueError):
        fit_class_pca(fmnist.train.images, fmnist.train.labels, 10, 95)  # a share, not a percentage


def test_pca_is_cached(fmnist, tmp_path):
    cache = tmp_path / "pca.pt"
    first, loaded = cached_class_pca(cache, fmnist.train.images, fmnist.train.labels, 10, 0.9)
    assert not loaded and cache.exists()
    second, loaded = cached_class_pca(cache, fmnist.train.images, fmnist.train.labels, 10, 0.9)
    assert loaded and second.num_components == first.num_components
    assert torch.equal(second.components[3], first.components[3])
    x0 = initial("pca", torch.arange(10).repeat(2), (1, 28, 28), pca=second)
    assert x0.shape == (20, 1, 28, 28) and 0 <= x0.min() and x0.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["erm", "pgd"])
def test_sgld_on_joint_energy_lowers_the_energy_of_its_samples(method):
    model = _model(method)
    y = torch.arange(10).repeat(3)
    x0 = initial("noise", y, (1, 28, 28), generator=torch.Generator().manual_seed(0))
    res = sgld(model, x0, y, SGLDConfig(steps=30, step_size=1.0, noise=0.01, energy="joint"),
               generator=torch.Generator().manual_seed(1))
    assert res.energy_end.mean() < res.energy_start.mean() - 1.0, res.trace
    assert res.x.min() >= 0 and res.x.max() <= 1
    # momentum and step-wise clipping also descend; on CE (eq. 16) the samples end up classified as y
    res = sgld(model, x0, y, SGLDConfig(steps=30, step_size=0.5, noise=0.01, energy="ce", momentum=0.5,
                                        clip_grad=5.0))
    assert res.energy_end.mean() < res.energy_start.mean()
    with torch.no_grad():
        assert (model(res.x).argmax(1) == y).float().mean() >= 0.7


@pytest.mark.slow
def test_fid_with_registered_classifier_extractor(fmnist):
    """FID of a split against itself is ~0, against noise it is large (torch-fidelity, registered extractor)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from workloads.generation.metrics import CLASSIFIER_EXTRACTOR, fidelity

    model = _model("erm")
    real = fmnist.test.images[:500]
    other = fmnist.test.images[500:1000]
    noise = torch.rand(500, 1, 28, 28)
    same = fidelity(real, real, "classifier", model)
    assert CLASSIFIER_EXTRACTOR in FEATURE_EXTRACTORS_REGISTRY and not same.comparable
    assert "NOT comparable" in same.note
    halves = fidelity(other, real, "classifier", model)
    vs_noise = fidelity(noise, real, "classifier", model)
    f = lambda r: r.metrics["frechet_inception_distance"]  # noqa: E731
    assert abs(f(same)) < 1e-2, same.metrics
    assert f(vs_noise) > 50 * max(f(halves), 1e-3), (halves.metrics, vs_noise.metrics)
    assert vs_noise.metrics["kernel_inception_distance_mean"] > 10 * halves.metrics["kernel_inception_distance_mean"]
    assert same.metrics["inception_score_mean"] > vs_noise.metrics["inception_score_mean"]
    assert model.net[0].weight.requires_grad  # torch-fidelity froze a copy, not the model


def test_hutchinson_fisher_score_matches_the_exact_hessian_trace():
    from workloads.generation.metrics import fisher_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    est = fisher_scores(model, x, y, probes=400, generator=torch.Generator().manual_seed(0))
    exact_tr, exact_grad = [], []
    for i in range(len(x)):
        def e(v, i=i):
            return -model(v.view(1, 1, 4, 4))[0, y[i]]
        v = x[i].flatten()
        exact_tr.append(torch.autograd.functional.hessian(e, v).trace())
        exact_grad.append(0.5 * torch.autograd.functional.jacobian(e, v).pow(2).sum())
    exact_tr, exact_grad = torch.stack(exact_tr).mean(), torch.stack(exact_grad).mean()
    assert abs(est["grad_joint"] - exact_grad) < 1e-5
    assert abs(est["trace_joint"] - exact_tr) < 0.1 * exact_tr.abs() + 1e-3, (est, exact_tr)
    assert abs(est["jfs"] - (exact_grad - exact_tr)) < 0.1 * exact_tr.abs() + 1e-3


@pytest.mark.slow
def test_generate_command(tmp_path, capsys):
    from PIL import Image

    from orchestrator.cli import main

    sweep = trained("pgd")
    out = tmp_path / "gen"
    rc = main(["generate", str(sweep), "--which", "last", "--n-per-class", "3", "--steps", "10", "--init", "pca",
               "--pca-variance", "0.9", "--metrics", "--extractor", "classifier", "--reference-n", "300",
               "--fisher-n", "20", "--fisher-probes", "2", "--threads", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "NOT comparable" in text and "JFS" in text
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * (56 + 2) + 2, 10 * (56 + 2) + 2)  # 3 columns, one row per class, 2x scale
    saved = torch.load(out / "samples.pt", weights_only=True)
    assert saved["x"].shape == (30, 1, 28, 28) and saved["y"].tolist() == [c for c in range(10) for _ in range(3)]
    assert json.loads(saved["settings"])["init"] == "pca"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extractor"] == "classifier" and not metrics["comparable_to_published"]
    assert {"frechet_inception_distance", "inception_score_mean", "kernel_inception_distance_mean"} <= \
        set(metrics["fidelity"])
    assert metrics["fisher"]["jfs"] > 0 and min(metrics["pca_components"]) >= 1
    ckpt_dir = sweep / "checkpoints" / f"trial={trial_of(sweep)}"
    assert list(ckpt_dir.glob("pca-fashion_mnist-*-var0.9.pt"))  # PCA fitted once, cached by the checkpoint


def test_generate_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from orchestrator.cli import main

    d = str(tmp_path)
    for argv in ([d, "--pca-variance", "95"], [d, "--energy", "marginal"], [d, "--init", "zeros"],
                 [d, "--steps", "-1"], [d, "--momentum", "1.5"], [str(tmp_path / "none")], [d]):
        assert main(["generate", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("energy-at generate: error:") and "\n" not in err, (argv, err)
