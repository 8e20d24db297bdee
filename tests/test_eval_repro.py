"""Reproducible evaluation: equal weights give equal test figures, and `energy-at eval` reproduces result.json."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from orchestrator.config import compose_trial
from workloads.attacks import SampleNoise
from workloads.data import load_dataset
from workloads.evaluation.per_epoch import evaluate_pgd
from workloads.models import build_model
from workloads.trial import Trial

REPO = Path(__file__).resolve().parents[1]
# one epoch: best.pt and last.pt hold the same weights; 500 test images under PGD-3 from random starts
TINY = ["method=pgd", "attack.steps=2", "epochs=1", "batch_size=64", "data.subset=512", "data.val_size=128",
        "data.probe_size=64", "data.test_size=500", "eval.pgd_steps=3", "eval.batch_size=128", "attack.eps=0.1",
        "threads=1", "device=cpu", "seed=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Trial, dict]:
    out = tmp_path_factory.mktemp("repro")
    trial = Trial(compose_trial([*TINY, f"out={out}"]))
    summary = trial.run()
    assert summary["status"] == "finished", summary
    return out, trial, trial.run_dir.read_result(trial.id)


def test_equal_checkpoints_give_equal_test_figures(finished):
    _, trial, result = finished
    best, last = (torch.load(trial.checkpoint_dir / f"{w}.pt", weights_only=True) for w in ("best", "last"))
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert best["epoch"] == last["epoch"] == result["epochs_done"] == 1  # epochs done, in both
    assert result["test_acc_pgd"] == result["best_test_acc_pgd"] < result["test_acc_nat"]
    assert result["test_acc_nat"] == result["best_test_acc_nat"]


def _eval(out: Path, which: str) -> tuple[str, dict]:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "eval", str(out), "--which", which,
                        "--attacks", "clean,pgd-trial", "--threads", "1", "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = pl.read_parquet(out / "evals" / "*" / "*.parquet").filter(pl.col("which") == which)
    return r.stdout, {a: (n, acc) for a, n, acc in rows.select("attack", "n", "accuracy").iter_rows()}


@pytest.mark.parametrize("which, prefix", [("last", ""), ("best", "best_")])
def test_eval_command_reproduces_the_test_figures_of_result_json(finished, which, prefix):
    out, trial, result = finished
    stdout, rows = _eval(out, which)
    assert f"test split of trial {trial.id}: 500 images, seed 1" in stdout
    n = result["test_n"]
    assert rows["clean"][0] == rows["pgd-trial"][0] == n == 500

    def correct(acc: float) -> int:
        return round(acc * n)

    assert correct(rows["clean"][1]) == correct(result[f"{prefix}test_acc_nat"])
    assert correct(rows["pgd-trial"][1]) == correct(result[f"{prefix}test_acc_pgd"])


def test_evaluation_starts_are_per_sample_and_leave_the_global_rng_alone():
    data = load_dataset("fashion_mnist", subset=64, val_size=96, probe_size=16, seed=0)
    x = data.val.images.float() / 255
    whole = SampleNoise(3, data.val.ids)(x, 0.1)
    parts = torch.cat([SampleNoise(3, data.val.ids[i:i + 40])(x[i:i + 40], 0.1) for i in range(0, 96, 40)])
    assert torch.equal(whole, parts) and whole.abs().max() <= 0.1  # the batch does not matter
    assert not torch.equal(whole, SampleNoise(4, data.val.ids)(x, 0.1))  # the seed does
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, 28, (0.5,), (0.5,)).eval()
    state = torch.get_rng_state()
    first, again = (evaluate_pgd(model, data.val, 0.1, 0.05, 3, restarts=2, batch_size=32, seed=3)
                    for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)  # training after an evaluation draws what it drew before
    assert torch.equal(first.e_adv, again.e_adv) and torch.equal(first.correct_adv, again.correct_adv)


def test_probe_spread_reads_the_probe_as_the_trial_did(finished):
    """benchmarks/probe_spread.py: under the trial's own seed its reading is the trial's logged epoch-end probe
    acc_pgd (same images, attack and starts); the spread is the readings' sd against the z-test's noise."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import probe_spread

    out, trial, _ = finished
    (r,) = probe_spread.readings(out, seeds=3, which="last")
    logged = (pl.read_parquet(out / "epochs" / "**" / "*.parquet")
              .filter((pl.col("split") == "probe") & pl.col("train_loss").is_not_null())["acc_pgd"].item())
    assert r["trial"] == trial.id and r["n"] == 64 and len(r["acc"]) == 3
    assert r["acc"][1] == pytest.approx(logged)  # seed=1, the trial's
    row = probe_spread.spread({**r, "acc": [0.5, 0.5, 0.5 + 1 / 64]})
    assert row["sd"] == pytest.approx((1 / 64) / 3 ** 0.5)
    assert row["z_test_noise"] == pytest.approx((2 * row["mean"] * (1 - row["mean"]) / 64) ** 0.5)
    assert row["largest_difference_z"] == pytest.approx((1 / 64) / row["z_test_noise"])
    assert row["ratio"] == pytest.approx(2 ** 0.5 * row["sd"] / row["z_test_noise"])
