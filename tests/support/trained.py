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


from workloads.config import from_dict
from workloads.run_dir import RunDir

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
    return RunDir(sweep).checkpointed()[0]
