"""The incremental stop rule decides exactly as a fresh read of the trial's logs, epoch by epoch, on a real run.

A real Fashion-MNIST FGSM trial (eps 0.3, where it overfits catastrophically) runs with a stop
callable that asks both `EnergyStop` (which reads only the part files written since its last
call) and `first_event` (which re-reads every file) after each epoch and after each probe the energy
trigger ran mid-epoch, and never stops.
"""
from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support.synth import synth_trial

from orchestrator.config import compose_trial
from orchestrator.stopper import EnergyStop, first_event
from orchestrator.config import DEFAULT_STOP_ON
from workloads.run_dir import RunDir
from workloads.trial import Trial

RUN = ["method=fgsm", "attack.eps=0.3", "epochs=5", "batch_size=64", "data.subset=1024", "data.val_size=128",
       "data.probe_size=128", "data.test_size=64", "eval.pgd_steps=3", "threads=1", "device=cpu",
       "telemetry.flush_every=4"]


@pytest.mark.parametrize("stop_on", [DEFAULT_STOP_ON, ("co_energy", "co_pgd_probe", "ro", "nan")])
def test_incremental_decision_equals_a_fresh_read_at_every_epoch(tmp_path, stop_on) -> None:
    cfg = compose_trial([*RUN, f"out={tmp_path}", "stop_on=[]"])
    trial = Trial(cfg)
    incremental = EnergyStop(tmp_path, trial.id, stop_on)
    decisions, asked = [], []

    def both(metrics: dict) -> None:
        asked.append(metrics)
        fresh = first_event(tmp_path, trial.id, metrics["epoch"], stop_on)
        decisions.append((metrics["epoch"], incremental(metrics), fresh))
        return None

    assert trial.run(stop=both)["status"] == "finished"
    epoch_ends = [d[0] for d, m in zip(decisions, asked) if "train_loss" in m]
    assert epoch_ends == list(range(5))
    assert [d[0] for d in decisions] == sorted(d[0] for d in decisions)  # mid-epoch calls come in order
    for epoch, mine, fresh in decisions:
        assert mine == fresh, (epoch, mine, fresh)
    # it read many parts, a few at a time, and the merged files that replaced them
    assert len(incremental._logs._seen["batches"]) > 5 + len(incremental._logs.files("batches"))


@pytest.mark.parametrize("kind_of_trial", [{"co_epoch": 4}, {"nan_step": 230}, {"ro_peak": 8}])
def test_incremental_decision_on_a_stream_written_epoch_by_epoch(tmp_path, kind_of_trial) -> None:
    """Synthetic streams with a collapse, a NaN or robust overfitting, written a few parts per epoch."""
    epochs = 30 if "ro_peak" in kind_of_trial else 10  # robust overfitting is seen epochs after its peak
    tables = synth_trial("t", epochs=epochs, steps=50, **kind_of_trial)
    stop_on = ("co_energy", "co_pgd_probe", "ro", "nan")
    incremental, fired = EnergyStop(tmp_path, "t", stop_on), []
    for epoch in range(epochs):
        for name, table in tables.items():
            rows = table.filter(pc.equal(table["epoch"], epoch))
            folder = RunDir(tmp_path).table(name, "t")
            folder.mkdir(parents=True, exist_ok=True)
            for half in range(2):  # two parts an epoch
                part = rows.slice(half * rows.num_rows // 2, rows.num_rows - rows.num_rows // 2 if half else rows.num_rows // 2)
                pq.write_table(part, folder / f"part-{2 * epoch + half:06d}.parquet")
        mine, fresh = incremental({"epoch": epoch}), first_event(tmp_path, "t", epoch, stop_on)
        assert mine == fresh, (epoch, mine, fresh)
        fired += [mine["kind"]] if mine else []
    assert fired, "the synthetic failure was never detected: the comparison would be vacuous"
