"""A small probe is not evidence: healthy trials with a 32-sample probe are never stopped.

Real training on Fashion-MNIST with the `smoke` preset's sizes (256 images, a 32-sample probe)
at eps 0.1, where FGSM and RS-FGSM are healthy, with the default stop rule; and the detectors'
sample-size bounds on hand-made epochs: the same accuracies that are noise at n = 32 are a
collapse at n = 256.
"""
from __future__ import annotations

import polars as pl
import pytest
from support.real_logs import val_pgd

from analysis.detectors import co_energy, co_pgd_probe, detect
from analysis.read import SweepLogs
from orchestrator.config import compose_trial
from orchestrator.stopper import stop_rule
from orchestrator.config import DEFAULT_STOP_ON
from workloads.trial import Trial

SMOKE = ["attack.eps=0.1", "epochs=4", "batch_size=64", "data.subset=256", "data.val_size=64",
         "data.probe_size=32", "data.test_size=64", "eval.pgd_steps=2", "threads=1", "device=cpu"]


@pytest.mark.parametrize("method", ["fgsm", "rs_fgsm"])
def test_healthy_trials_with_a_32_sample_probe_are_never_stopped(tmp_path, method: str) -> None:
    for seed in (0, 1, 2):
        cfg = compose_trial([f"method={method}", f"seed={seed}", *SMOKE, f"out={tmp_path}"])
        assert tuple(cfg.stop_on) == DEFAULT_STOP_ON and cfg.data.probe_size == 32
        summary = Trial(cfg).run(stop=stop_rule(cfg))
        acc = val_pgd(tmp_path, summary["trial"])
        assert max(acc) > 0.2 and acc[-1] >= 0.5 * max(acc), acc  # healthy by the corpus's collapse label
        assert summary["status"] == "finished" and summary["epochs_done"] == 4, summary
    logs = SweepLogs(tmp_path)
    events = detect(logs.scan("batches"), logs.scan("epochs"), logs.scan("probes"))
    assert events.is_empty(), events.select("trial", "kind", "epoch", "evidence").rows()  # not logged either


def probe_epochs(acc: list[float], n: int) -> pl.DataFrame:
    return pl.DataFrame({"trial": "t", "epoch": range(len(acc)), "step": [10 * e + 9 for e in range(len(acc))],
                         "split": "probe", "acc_pgd": acc, "n": n, "train_loss": 1.0},  # epoch ends, not mid-epoch
                        schema_overrides={"epoch": pl.Int32, "acc_pgd": pl.Float32, "n": pl.Int32})


def test_pgd_probe_drop_needs_more_than_sampling_noise() -> None:
    curve = [0.40, 0.44, 0.19]  # 14/32 -> 6/32: z 2.2; 112/256 -> 48/256: z 6.2
    assert co_pgd_probe(probe_epochs(curve, 32)).is_empty()
    fired = co_pgd_probe(probe_epochs(curve, 256))
    assert fired.select("kind", "epoch").rows() == [("co_pgd_probe", 2)]
    assert fired["score"][0] == pytest.approx(0.25, abs=1e-6)  # drop from the best earlier epoch
    assert co_pgd_probe(probe_epochs([0.5, 0.5, 0.03], 32))["epoch"].to_list() == [2]  # a real collapse still fires


def test_slow_decline_is_measured_against_the_best_epoch() -> None:
    curve = [0.40, 0.45, 0.36, 0.30, 0.21]  # no epoch falls by 0.2 from the one before
    assert co_pgd_probe(probe_epochs(curve, 1000))["epoch"].to_list() == [4]


def test_a_mid_epoch_probe_is_tested_but_never_the_reference() -> None:
    """The rule's second freeze (docs/detection.md): test seed 12's false stop, a triggered probe's one-off
    0.141 in a trial at 0.01-0.05 made the next epoch-end reading (0.008) a fall."""
    epoch_ends = probe_epochs([0.02, 0.03, 0.008, 0.03], 256)
    spike = epoch_ends.filter(pl.col("epoch") == 2).with_columns(step=pl.lit(24, pl.Int64), acc_pgd=pl.lit(0.141, pl.Float32),
                                                                  train_loss=pl.lit(None, pl.Float64))
    assert co_pgd_probe(pl.concat([epoch_ends, spike.with_columns(train_loss=pl.lit(1.0))]))["epoch"].to_list() == [2]
    assert co_pgd_probe(pl.concat([epoch_ends, spike])).is_empty()  # mid-epoch: the reference stays 0.03
    fall = probe_epochs([0.40, 0.45, 0.10], 256).with_columns(  # a mid-epoch probe that reads a fall still stops
        train_loss=pl.when(pl.col("epoch") == 2).then(None).otherwise(pl.col("train_loss")))
    assert co_pgd_probe(fall).select("epoch", "step").rows() == [(2, 29)]


def probes(moved: int, n: int) -> pl.DataFrame:
    """Two probe epochs of n samples; in the second, `moved` samples' dE jumped by 5."""
    d0 = [0.01 * (i % 7) for i in range(n)]
    d1 = [d + (5.0 if i < moved else 0.0) for i, d in enumerate(d0)]
    return pl.DataFrame({"trial": "t", "epoch": [0] * n + [1] * n, "e_nat": d0 + d1, "e_adv": [0.0] * (2 * n)},
                        schema_overrides={"epoch": pl.Int32})


def test_probe_share_knows_its_sample_size() -> None:
    assert co_energy(None, probes=probes(7, 32)).is_empty()  # 22% of 32: noise for a 20% threshold
    assert co_energy(None, probes=probes(11, 32))["epoch"].to_list() == [1]
    assert co_energy(None, probes=probes(66, 256))["epoch"].to_list() == [1]  # 26% of 256
