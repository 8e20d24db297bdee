"""Every method's shipped defaults (its method/*.yaml, optim and attack included) train a usable
classifier on a short run on the embedded Fashion-MNIST: a new user's first `energy-at train method=M`."""
import pytest
import torch

from orchestrator.config import compose_trial
from workloads.methods import METHODS
from workloads.trial import Trial

SHORT = ["epochs=2", "data.subset=2048", "data.val_size=256", "data.probe_size=64", "data.test_size=500",
         "precision=bf16", "channels_last=true"]
CHANCE = 0.1  # ten classes


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_defaults_train_above_chance(tmp_path, method):
    trial = Trial(compose_trial([f"method={method}", *SHORT, f"out={tmp_path}"]))
    if method == "jeat":  # its paper's optimiser: SGD at 0.05 collapsed to a constant classifier
        assert isinstance(trial.opt, torch.optim.Adam) and trial.cfg.optim.lr == 1e-4
    result = trial.run()
    assert result["status"] == "finished", result
    assert result["test_acc_nat"] > CHANCE + 0.3, result  # a constant classifier scores 0.1
    if method != "erm":
        assert result["test_acc_pgd"] > CHANCE + 0.1, result  # PGD-10 at the default eps (0.1)
