"""Checkpoints of real trained models (tests/support/trained.py) resolve and rebuild the trained model."""
from __future__ import annotations

import pytest
import torch
from support.trained import trained, trial_of


@pytest.mark.slow
def test_checkpoint_rebuilds_the_trained_model():
    from workloads.evaluation import load_trial, resolve, trial_data
    from workloads.trial import Trial

    sweep = trained("erm")
    trial = trial_of(sweep)
    by_file = resolve(sweep / "checkpoints" / f"trial={trial}" / "last.pt")
    by_trial = resolve(sweep / "trials" / f"trial={trial}", which="last")
    by_sweep = resolve(sweep, which="last")
    assert [r.checkpoint for r in by_file] == [r.checkpoint for r in by_trial] == [r.checkpoint for r in by_sweep]
    assert by_file[0].which == "last" and by_file[0].sweep_dir == sweep
    model, cfg, meta = load_trial(by_file[0])
    assert cfg.method.name == "erm" and cfg.data.subset == 2000 and meta["epoch"] == 2
    # same weights as the trial that wrote them: resuming it loads last.pt, its logits must match
    again = Trial(cfg)
    x = trial_data(cfg).test.images[:16].float() / 255
    again.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), again.model(x))


@pytest.mark.parametrize("bad", ["nowhere", "file.txt", "plain_dir"])
def test_resolve_refuses_paths_without_checkpoints(tmp_path, bad):
    from workloads.evaluation import CheckpointError, resolve

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(CheckpointError):
        resolve(tmp_path / bad)
