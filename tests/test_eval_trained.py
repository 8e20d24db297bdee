"""Small real Fashion-MNIST models shared by the eval/generation tests (trained once per pytest process).

`trained("erm")` / `trained("pgd")` train in-process through `workloads.trial.Trial`
(threads=1, 2,000 images, 2 epochs) into a temp sweep dir and return it.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from workloads.config import from_dict

ROOT = Path(tempfile.mkdtemp(prefix="energy-at-eval-tests-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)

SETTINGS = {
    "erm": {"method": {"name": "erm"}},
    "pgd": {"method": {"name": "pgd"}, "attack": {"steps": 3}},
}


@functools.cache
def trained(method: str) -> Path:
    """A sweep directory holding one finished trial of `method` (eps 0.1) on 2,000 Fashion-MNIST images."""
    from workloads.trial import Trial

    out = ROOT / method
    cfg = from_dict({
        **SETTINGS[method],
        "attack": {"eps": 0.1, **SETTINGS[method].get("attack", {})},
        "data": {"name": "fashion_mnist", "subset": 2000, "val_size": 300, "probe_size": 128, "test_size": 300},
        "eval": {"pgd_steps": 3}, "epochs": 2, "threads": 1, "seed": 0, "device": "cpu", "out": str(out),
    })
    summary = Trial(cfg).run()
    assert summary["status"] == "finished", summary
    return out


def trial_of(sweep: Path) -> str:
    return next((sweep / "checkpoints").glob("trial=*")).name.split("=", 1)[1]


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
