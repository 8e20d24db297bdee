"""The energy stopper on a real sweep: the FGSM trial with catastrophic overfitting is stopped,
the healthy RS-FGSM one is not, and the decision equals offline detection on the same prefix.

The sweep (embedded Ray, stopper on) is made once per session by `tests/support/real_logs.py` `real_runs`,
which also resumes the stopped trial to its end in a copy of the directory (full curves).
"""
from __future__ import annotations

import json

import polars as pl
import pytest
from support.real_logs import EPOCHS, Runs, all_events, energy_at, real_runs, trial_overrides

from analysis.detectors import detect, with_actions
from analysis.read import SweepLogs
from orchestrator.stopper import DEFAULT_STOP_ON

pytestmark = pytest.mark.slow

KEY = ["trial", "kind", "epoch", "step", "evidence"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return real_runs(tmp_path_factory.mktemp("real-logs"))


def result(runs: Runs, trial: str) -> dict:
    return json.loads((runs.sweep / "trials" / f"trial={trial}" / "result.json").read_text())


def recorded(runs: Runs) -> pl.DataFrame:
    return SweepLogs(runs.sweep).scan("events").collect()


def test_co_trial_is_stopped_and_the_healthy_one_is_not(runs: Runs) -> None:
    events = recorded(runs)
    assert events["trial"].to_list() == [runs.co], events.rows()
    stop = events.row(0, named=True)
    assert stop["action"] == "stopped" and stop["kind"] in DEFAULT_STOP_ON
    co = result(runs, runs.co)
    assert co["status"] == "stopped", co
    assert co["reason"].startswith(f"{stop['kind']} at epoch {stop['epoch']}: ")
    assert co["epochs_done"] == stop["epoch"] + 1  # stopped right after the epoch that fired
    epochs = SweepLogs(runs.sweep).scan("epochs").filter(pl.col("trial") == runs.co).collect()
    assert epochs["epoch"].max() == stop["epoch"]  # no later epoch was evaluated
    assert 0 <= co["test_acc_pgd"] <= 1 and 0 <= co["best_test_acc_pgd"] <= 1  # a stopped trial keeps its results
    assert co["stopped_by"] == stop["kind"] and co["best_epoch"] >= 0
    shown = with_actions(all_events(runs.sweep), SweepLogs(runs.sweep).scan("events"))
    assert (shown.filter((pl.col("kind") == stop["kind"]) & (pl.col("epoch") == stop["epoch"]))["action"]
            == "stopped").all()  # `energy-at detect` and the report show which event stopped the trial
    healthy = result(runs, runs.healthy)
    assert healthy["status"] == "finished" and healthy["epochs_done"] == EPOCHS > stop["epoch"] + 1


def test_stop_decision_equals_offline_detection_on_the_prefix(runs: Runs) -> None:
    stop = recorded(runs).row(0, named=True)
    sweep = SweepLogs(runs.sweep)
    prefix = {t: sweep.scan(t).filter((pl.col("trial") == runs.co) & (pl.col("epoch") <= stop["epoch"]))
              for t in ("batches", "epochs", "probes")}
    offline = (detect(prefix["batches"], prefix["epochs"], prefix["probes"])
               .filter(pl.col("kind").is_in(DEFAULT_STOP_ON))
               .sort("epoch", "step", nulls_last=True))
    assert not offline.is_empty()
    first = offline.row(0, named=True)
    assert {k: first[k] for k in KEY} == {k: stop[k] for k in KEY}
    assert first["score"] == pytest.approx(stop["score"])
    # causality on a real stream: the uninterrupted run's first event is the same one
    full = all_events(runs.full).filter((pl.col("trial") == runs.co) & pl.col("kind").is_in(DEFAULT_STOP_ON))
    assert full.sort("epoch", "step", nulls_last=True).select(KEY).row(0) == tuple(stop[k] for k in KEY)


def test_healthy_trial_has_no_event_offline_either(runs: Runs) -> None:
    assert all_events(runs.sweep).filter(pl.col("trial") == runs.healthy).is_empty()


def test_energy_at_train_stops_early_as_a_sweep_does(runs: Runs, tmp_path) -> None:
    """`energy-at train ... stop_on=[co_energy]` on the collapsing FGSM run ends at the epoch of the
    first co_energy event that offline `detect` finds on the same trial's uninterrupted logs."""
    first = (all_events(runs.full).filter((pl.col("trial") == runs.co) & (pl.col("kind") == "co_energy"))
             .sort("epoch")["epoch"])
    assert len(first), "the collapsing run has no co_energy event to stop on"
    r = energy_at("train", *trial_overrides("fgsm"), "stop_on=[co_energy]", "threads=1", "device=cpu",
                  f"out={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(next((tmp_path / "trials").glob("*/result.json")).read_text())
    assert result["status"] == "stopped" and result["stopped_by"] == "co_energy", result
    assert result["epochs_done"] == first[0] + 1 and result["epochs_done"] < EPOCHS  # early, at the event
    assert 0 <= result["test_acc_pgd"] <= 1
