"""The energy stopper on a real sweep: the FGSM trial with catastrophic overfitting (eps 0.3) is
stopped, the healthy one (eps 0.1) is not, and the decision equals offline detection on the same prefix.

The sweep (embedded Ray, stopper on) is made once per session by `tests/support/real_logs.py`
`live_runs`, which tries a few seeds until the eps 0.3 trial is stopped: where FGSM collapses is
chaotic, what these tests check is not.
"""
from __future__ import annotations

import json

import polars as pl
import pytest
from support.real_logs import CO_EPS, EPOCHS, Runs, all_events, energy_at, live_runs, result, trial_overrides

from analysis.detectors import detect, with_actions
from analysis.read import SweepLogs
from orchestrator.stopper import DEFAULT_STOP_ON

pytestmark = pytest.mark.slow

KEY = ["trial", "kind", "epoch", "step", "evidence"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return live_runs(tmp_path_factory.mktemp("live"))


def recorded(runs: Runs) -> pl.DataFrame:
    return SweepLogs(runs.sweep).scan("events").collect()


def test_co_trial_is_stopped_and_the_healthy_one_is_not(runs: Runs) -> None:
    events = recorded(runs)
    assert events["trial"].to_list() == [runs.co], events.rows()
    stop = events.row(0, named=True)
    assert stop["action"] == "stopped" and stop["kind"] in DEFAULT_STOP_ON
    co = result(runs.sweep, runs.co)
    assert co["status"] == "stopped", co
    assert co["reason"].startswith(f"{stop['kind']} after epoch {stop['epoch'] + 1}: ")  # 1-based, as epochs_done
    assert co["epochs_done"] == stop["epoch"] + 1  # stopped right after the epoch that fired
    epochs = SweepLogs(runs.sweep).scan("epochs").filter(pl.col("trial") == runs.co).collect()
    assert epochs["epoch"].max() == stop["epoch"]  # no later epoch was evaluated
    assert 0 <= co["test_acc_pgd"] <= 1 and 0 <= co["best_test_acc_pgd"] <= 1  # a stopped trial keeps its results
    assert co["stopped_by"] == stop["kind"] and co["best_epoch"] >= 0
    shown = with_actions(all_events(runs.sweep), SweepLogs(runs.sweep).scan("events"))
    assert (shown.filter((pl.col("kind") == stop["kind"]) & (pl.col("epoch") == stop["epoch"]))["action"]
            == "stopped").all()  # `energy-at detect` and the report show which event stopped the trial
    healthy = result(runs.sweep, runs.healthy)
    assert healthy["status"] == "finished" and healthy["epochs_done"] == EPOCHS, healthy


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


def test_healthy_trial_has_no_stop_event_offline_either(runs: Runs) -> None:
    events = all_events(runs.sweep).filter((pl.col("trial") == runs.healthy) & pl.col("kind").is_in(DEFAULT_STOP_ON))
    assert events.is_empty(), events["evidence"].to_list()


def test_energy_at_train_stops_early_as_a_sweep_does(runs: Runs, tmp_path) -> None:
    """`energy-at train` with the stopped sweep trial's config ends at the same event, epoch and results."""
    stop = recorded(runs).row(0, named=True)
    r = energy_at("train", "threads=1", "device=cpu", *trial_overrides(CO_EPS, runs.seed), f"out={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    trained = json.loads(next((tmp_path / "trials").glob("*/result.json")).read_text())
    assert trained["trial"] == runs.co
    assert trained["status"] == "stopped" and trained["stopped_by"] == stop["kind"], trained
    swept = result(runs.sweep, runs.co)
    assert trained["epochs_done"] == swept["epochs_done"] == stop["epoch"] + 1 < EPOCHS
    assert trained["reason"] == swept["reason"]
