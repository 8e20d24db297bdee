"""Detectors on real training logs from the committed detection corpus (identical on every machine):
a labelled FGSM collapse and a healthy RS-FGSM trial (tests/support/real_logs.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from support.real_logs import CORPUS_CO, CORPUS_HEALTHY, all_events, corpus_sweep, energy_at, val_pgd

from analysis.detectors import detect
from analysis.read import SweepLogs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "detection"))
from scoreboard import label  # noqa: E402  (the corpus's written label definitions)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return corpus_sweep(tmp_path_factory.mktemp("corpus"))


def test_the_trials_are_what_their_labels_say(sweep: Path) -> None:
    co, healthy = val_pgd(sweep, CORPUS_CO), val_pgd(sweep, CORPUS_HEALTHY)
    assert label(co, reference=max(co))[0] == "collapse", co
    assert label(healthy, reference=max(healthy)) == ("healthy", None), healthy


def test_co_energy_fires_at_the_pgd_collapse(sweep: Path) -> None:
    acc = val_pgd(sweep, CORPUS_CO)
    _, collapse = label(acc, reference=max(acc))
    events = all_events(sweep).filter((pl.col("trial") == CORPUS_CO) & (pl.col("kind") == "co_energy"))
    assert not events.is_empty(), f"co_energy missed CO (val PGD accuracy {acc}, collapse at epoch {collapse})"
    # not before the first real fall (a quarter below the best so far), no later than one epoch after the label
    first_fall = next(e for e in range(1, len(acc)) if acc[e] <= 0.75 * max(acc[:e]))
    onset = events["epoch"].min()
    assert first_fall <= onset <= collapse + 1, (onset, first_fall, collapse, acc, events["evidence"].to_list())


def test_no_events_on_the_healthy_run(sweep: Path) -> None:
    events = all_events(sweep).filter(pl.col("trial") == CORPUS_HEALTHY)
    assert events.is_empty(), events["evidence"].to_list()


def test_events_on_a_prefix_are_the_full_runs_events_up_to_it(sweep: Path) -> None:
    """Causality on a real stream: what `detect` finds on epochs <= e is the full run's events up to e."""
    logs = SweepLogs(sweep, trials=[CORPUS_CO])
    full = all_events(sweep).filter(pl.col("trial") == CORPUS_CO)
    cols = ["kind", "epoch", "step", "score", "evidence"]
    for e in range(len(val_pgd(sweep, CORPUS_CO))):
        prefix = [logs.scan(t).filter(pl.col("epoch") <= e) for t in ("batches", "epochs", "probes")]
        got = detect(*prefix).select(cols).rows()
        assert got == full.filter(pl.col("epoch") <= e).select(cols).rows(), e


def test_cli_detect_json_gives_the_same_events(sweep: Path) -> None:
    r = energy_at("detect", str(sweep), "--format", "json")
    assert r.returncode == 0, r.stderr
    cols = ["trial", "kind", "epoch", "step", "evidence"]
    cli = sorted(tuple(e[c] for c in cols) for e in json.loads(r.stdout))
    here = sorted(all_events(sweep).select(cols).rows())
    assert cli == here and cli, (cli, here)
    assert {e[0] for e in cli} == {CORPUS_CO}
