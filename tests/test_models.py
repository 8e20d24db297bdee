"""Model registry: shapes, in-model normalisation, channels_last, reference parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workloads.models import MODELS, Normalize, build_model

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)

# Parameter counts of the reference implementations for 10 classes, 3 input channels.
REFERENCE_PARAMS = {
    "preact_resnet18": 11_172_170,  # fast_adversarial PreActResNet18
    "resnet18": 11_173_962,  # kuangliu/pytorch-cifar ResNet18
    "wrn28_10": 36_479_194,
    "wrn34_10": 46_160_474,  # TRADES WideResNet-34-10
}


@pytest.fixture(autouse=True)
def _no_grad():
    torch.manual_seed(0)
    with torch.no_grad():
        yield


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_normalisation_and_channels_last(name):
    model = build_model(name, 10, 3, 32, CIFAR_MEAN, CIFAR_STD).eval()
    if name in REFERENCE_PARAMS:  # built once per test: the wide nets are slow to initialise
        assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()

    assert isinstance(model[0], Normalize)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.net((x - mean) / std), out)

    model = model.to(memory_format=torch.channels_last)
    out_cl = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image_size", [28, 32])
def test_small_cnn_layout(image_size):
    model = build_model("small_cnn", 10, 1, image_size, (0.286,), (0.353,)).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    side = image_size // 4
    expected = (9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * side * side * 128 + 128) + (128 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.rand(3, 1, image_size, image_size)).shape == (3, 10)


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18"])
def test_resnets_accept_grayscale_28x28(name):
    model = build_model(name, 7, 1, 28, (0.5,), (0.5,)).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_normalize_buffers_follow_the_model_and_state_dict():
    model = build_model("small_cnn", 10, 3, 32, CIFAR_MEAN, CIFAR_STD)
    state = model.state_dict()
    assert "normalize.mean" in state and "normalize.std" in state
    model = model.to(torch.float64)
    assert model.normalize.mean.dtype == torch.float64
    assert model.normalize.std.flatten().tolist() == pytest.approx(CIFAR_STD)


def test_gradients_reach_the_pixel_input():
    model = build_model("small_cnn", 10, 1, 28, (0.286,), (0.353,))
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    with torch.enable_grad():
        model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"model\.name must be one of .*small_cnn.*wrn34_10"):
        build_model("vgg16", 10, 3, 32, CIFAR_MEAN, CIFAR_STD)
    with pytest.raises(ValueError, match="one value per input channel"):
        build_model("small_cnn", 10, 1, 28, CIFAR_MEAN, CIFAR_STD)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("small_cnn", 1, 1, 28, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize((0.5,), (0.0,))


def test_wide_cnn_layout():
    """small_cnn's convolutions under a 2x2048 classifier: the capacity sits in the cheap fc layers."""
    model = build_model("wide_cnn", 10, 1, 28, (0.286,), (0.353,)).eval()
    convs = (9 * 32 + 32) + (32 * 9 * 64 + 64)
    fcs = (64 * 7 * 7 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == convs + fcs
    small = sum(p.numel() for p in build_model("small_cnn", 10, 1, 28, (0.286,), (0.353,)).parameters())
    assert (convs + fcs) > 20 * small


def test_wide_cnn_trains_a_few_pgd_steps_and_logs_its_energies(tmp_path):
    """`model=wide_cnn` through a real trial: every step logs finite energies, the epoch its accuracies."""
    from analysis.read import SweepLogs
    from orchestrator.config import compose_trial
    from workloads.trial import Trial

    cfg = compose_trial(["model=wide_cnn", "method=pgd", "attack.steps=2", "epochs=1", "batch_size=64",
                         "data.subset=256", "data.val_size=64", "data.probe_size=32", "data.test_size=64",
                         "telemetry.natural_every=1", f"out={tmp_path}"])
    with torch.enable_grad():
        result = Trial(cfg).run()
    assert result["status"] == "finished"
    logs = SweepLogs(tmp_path, warn=False)
    batches = logs.scan("batches").collect()
    assert batches.height == 4  # 256 images / 64
    for col in ("loss", "e_nat", "e_adv", "e_nat_y", "e_adv_y", "de", "de_y", "de_std"):
        assert batches[col].is_finite().all(), col
    epochs = logs.scan("epochs").collect()
    assert set(epochs["split"]) >= {"val", "probe"} and epochs["acc_pgd"].is_between(0, 1).all()
