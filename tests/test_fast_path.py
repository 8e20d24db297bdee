"""The fast path (issue 6): bf16 + channels_last within noise of fp32, torch.compile, fractional GPUs in Ray."""
import math
import subprocess
import sys

import polars as pl
import pytest
import torch

from orchestrator.config import compose_trial
from workloads.config import ConfigError
from workloads.trial import Trial

FAST = ["precision=bf16", "channels_last=true"]


def batches(out, trial):
    return pl.read_parquet(f"{out}/batches/{trial.id}/*.parquet").sort("step")


@pytest.mark.slow
def test_bf16_channels_last_robust_accuracy_within_noise_of_fp32(tmp_path):
    common = ["method=pgd", "attack.steps=5", "attack.eps=0.1", "epochs=2", "data.subset=3000", "data.val_size=256",
              "data.probe_size=64", "data.test_size=1000", "eval.pgd_steps=10", f"out={tmp_path}"]
    fp32, fast = Trial(compose_trial(common)), Trial(compose_trial([*common, *FAST]))
    assert fast.model.training and next(fast.model.parameters()).dtype == torch.float32  # autocast, fp32 weights
    result = {"fp32": fp32.run(), "fast": fast.run()}
    # same seed, same initial weights and batches: the first step's energies agree to bf16 precision
    first = {k: batches(tmp_path, t).row(0, named=True) for k, t in (("fp32", fp32), ("fast", fast))}
    for col in ("e_nat", "e_adv", "loss"):
        assert first["fast"][col] == pytest.approx(first["fp32"][col], rel=0.02, abs=0.02), col
    # after 2 epochs: test accuracies within 3 standard errors of a difference of two proportions (n = 1000)
    for key in ("test_acc_nat", "test_acc_pgd"):
        p, n = result["fp32"][key], result["fp32"]["test_n"]
        noise = 3 * math.sqrt(2 * max(p * (1 - p), 0.01) / n)
        assert abs(result["fast"][key] - p) <= noise, (key, result, noise)
    assert result["fp32"]["test_acc_pgd"] > 0.3  # both really learned something robust


def test_compiled_network_trains_like_eager_and_saves_eager_keys(tmp_path):
    common = ["method=pgd", "attack.steps=2", "epochs=1", "batch_size=64", "data.subset=256", "data.val_size=64",
              "data.probe_size=32", "data.test_size=64", "eval.pgd_steps=2", f"out={tmp_path}"]
    eager, compiled = Trial(compose_trial(common)), Trial(compose_trial([*common, "compile=default"]))
    eager.run(), compiled.run()
    a, b = batches(tmp_path, eager), batches(tmp_path, compiled)
    assert a["step"].to_list() == b["step"].to_list() == [0, 1, 2, 3]
    assert b["loss"][0] == pytest.approx(a["loss"][0], rel=1e-3)  # same init, same batch, fused kernels
    assert b["loss"].to_numpy() == pytest.approx(a["loss"].to_numpy(), rel=0.05)
    state = torch.load(compiled.checkpoint_dir / "last.pt", weights_only=True)["model"]
    eager.model.load_state_dict(state)  # strict: no `_orig_mod.` prefixes from the compiled wrapper


@pytest.mark.skipif(torch.cuda.is_available(), reason="device=auto is cuda here")
def test_cuda_graphs_refused_when_auto_finds_no_gpu(tmp_path):
    with pytest.raises(ConfigError, match=r"^compile: 'reduce-overhead' records CUDA graphs .* device=auto is cpu"):
        Trial(compose_trial(["compile=reduce-overhead", "device=auto", f"out={tmp_path}"]))
    assert not any(tmp_path.iterdir())  # refused before any file is written


def _epoch_spans(out):
    epochs = pl.read_parquet(f"{out}/epochs/*/*.parquet", hive_partitioning=True).filter(pl.col("split") == "val")
    spans = epochs.group_by("trial").agg(pl.col("wall_time").min().alias("a"), pl.col("wall_time").max().alias("b"))
    return sorted(spans.select("a", "b").rows())


# Ray in a child process with a fresh environment: nothing left in this process by earlier tests reaches it.
PACKING = """
import sys, ray
from orchestrator.sweep import SweepPlan
out, args = sys.argv[1], sys.argv[2:]
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)  # the mock: a node that claims one GPU
for gpus in ("0.5", "1"):
    plan = SweepPlan.from_overrides([*args, f"sweep.resources.gpus={gpus}", f"sweep.out={out}/gpus{gpus}"])
    assert all(t.device == "cpu" for t in plan.trials)
    assert not plan.run_here().errors
"""


def test_fractional_gpus_pack_trials_onto_one_device(tmp_path):
    """A mock GPU: Ray is told the node has 1 GPU (there is none here) and trials train on the CPU.

    What is real is Ray's scheduling: with sweep.resources.gpus=0.5 two trials share the
    one GPU and run at the same time; with gpus=1 they queue.
    """
    args = ["sweep=smoke", "method=erm", "seed=0,1", "epochs=6", "device=cpu", "sweep.stop_on=[]",
            "sweep.report=false", "sweep.resources.cpus=0.5"]
    r = subprocess.run([sys.executable, "-c", PACKING, str(tmp_path), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for gpus, concurrent in (("0.5", True), ("1", False)):
        (a0, a1), (b0, b1) = _epoch_spans(tmp_path / f"gpus{gpus}")  # first and last epoch end of each trial
        assert (b0 < a1) is concurrent, (gpus, a0, a1, b0, b1)


def test_cpu_trials_tune_glibc_malloc_for_reuse():
    from workloads.host import keep_freed_memory

    assert keep_freed_memory()  # glibc (Debian, the CI machine): both mallopt calls accepted


def test_training_steps_run_with_the_heap_frozen_out_of_gc(tmp_path):
    """Objects alive when the epoch starts (modules, data, libraries) are skipped by full collections
    during its steps, and collectable again after it."""
    import gc

    trial = Trial(compose_trial(["method=fgsm", "epochs=1", "data.subset=128", "data.probe_size=32", "batch_size=64",
                                f"out={tmp_path}"]))
    frozen, optimise = [], trial.optimise
    trial.optimise = lambda *a: (frozen.append(gc.get_freeze_count()), optimise(*a))[1]
    assert gc.get_freeze_count() == 0
    trial.train_epoch(0)
    assert len(frozen) == 2 and min(frozen) > 10_000  # torch alone holds more tracked objects than that
    assert gc.get_freeze_count() == 0
