"""Detectors on synthetic streams: CO/RO/NaN found where injected, silence on healthy runs,
causality (prefix property), events schema."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support.synth import SHAPES, prefix, synth_trial

from analysis.detectors import EVENT_SCHEMA, RO_MIN_PRE_CHANGES, co_energy, co_pgd_probe, detect, nan, ro
from workloads.telemetry.writer import NAT_COLUMNS

STEPS = 50


def frames(*trials: dict[str, pa.Table]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return tuple(pl.concat([pl.from_arrow(t[name]) for t in trials]) for name in ("batches", "epochs", "probes"))


def sources(events: pl.DataFrame) -> dict[str, int]:
    """evidence source ('batch', 'epoch', 'probe', ...) -> epoch, for one trial's events."""
    return {ev.split(":")[0]: epoch for ev, epoch in events.select("evidence", "epoch").iter_rows()}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [3, 7])
def test_co_found_at_injected_epoch(shape: str, k: int) -> None:
    b, e, p = frames(synth_trial("t", shape=shape, co_epoch=k, epochs=12, steps=STEPS, seed=k))
    energy = co_energy(b, e, p)
    assert sources(energy) == {"batch": k, "epoch": k, "probe": k}
    batch_step = energy.filter(pl.col("step").is_not_null())["step"].item()
    assert k * STEPS <= batch_step < k * STEPS + 20  # within the persistence window
    classic = co_pgd_probe(e)
    assert classic.select("trial", "kind", "epoch").rows() == [("t", "co_pgd_probe", k)]
    assert classic["score"].item() > 0.2


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_streams_give_no_events(shape: str, seed: int) -> None:
    b, e, p = frames(synth_trial("t", shape=shape, epochs=20, steps=STEPS, seed=seed))
    events = detect(b, e, p)
    assert events.is_empty(), events["evidence"].to_list()


GAP_5X = {"patience": None, "gap_rise": 5.0, "energy": "gap", "fall_z": None}  # the gap condition these tests are written for


def test_ro_found_after_the_decay_and_not_confused_with_co() -> None:
    b, e, p = frames(
        synth_trial("ro", epochs=40, steps=20, ro_peak=8, seed=1),
        synth_trial("co", epochs=40, steps=20, co_epoch=8, seed=1),
    )
    events = ro(e, **GAP_5X)
    assert events["trial"].to_list() == ["ro"]  # the CO trial has no lr decay: never looked at
    # val peaks at epoch 8 (the decay is at 6) and falls; the gap rises 0.06 an epoch from there, its noise
    # about 0.014: 5x it within 3 epochs of the peak, and not before it
    assert 8 < events["epoch"].item() <= 11
    assert "after the lr decay at epoch 6" in events["evidence"].item()
    assert "(epoch 8)" in events["evidence"].item()
    # the energy condition alone: the train - val gap rises 0.06 an epoch after the peak, noise about 0.02
    alone = ro(e, patience=None, gap_rise=3.0, energy="gap", fall_z=None)
    assert alone["trial"].to_list() == ["ro"] and 8 < alone["epoch"].item() <= 11
    assert ro(e, patience=None, gap_rise=1e4, fall_z=None).is_empty()
    assert ro(e, patience=1, gap_rise=None, fall_z=None)["epoch"].item() == 9  # Rice et al. with patience 1
    # the RO trial has no CO
    assert detect(b, e, p, {"ro": GAP_5X}).filter(pl.col("trial") == "ro")["kind"].to_list() == ["ro"]


def test_ro_waits_for_enough_history_before_the_decay() -> None:
    """A decay at epoch 2 leaves one change of the gap before it (MAD 0): no noise, so no energy stop (a
    healthy 4-epoch piecewise run was stopped at its decay); from RO_MIN_PRE_CHANGES changes on it acts."""
    ep = np.arange(12)
    rows = {"trial": "t", "epoch": np.tile(ep, 2), "step": np.tile(ep * 10 + 9, 2), "split": ["val"] * 12 + ["probe"] * 12, "n": 1000,
            "acc_pgd": np.tile(0.3 + 0.02 * ep, 2),
            "de_y": np.r_[-1.0 - 0.05 * ep - 0.01 * (ep % 2), -0.9 + 0.05 * ep]}  # the gap widens 0.1 an epoch
    for decay, fires in [(2, False), (RO_MIN_PRE_CHANGES, False), (RO_MIN_PRE_CHANGES + 1, True)]:
        e = pl.DataFrame(rows | {"lr": np.tile(np.where(ep < decay, 0.1, 0.01), 2)})
        assert ro(e, **GAP_5X).height == fires, decay


def _val_curves(curves: dict[str, list[float]], decay: int, n: int = 1000) -> pl.DataFrame:
    """Epoch rows (val and probe) of trials whose val acc_pgd follows `curves`; the lr decays x0.1 at `decay`."""
    rows = []
    for trial, acc in curves.items():
        for epoch, a in enumerate(acc):
            for split in ("val", "probe"):
                rows.append({"trial": trial, "epoch": epoch, "step": epoch * 10 + 9, "split": split, "n": n,
                             "acc_pgd": a, "de_y": -1.0, "lr": 0.1 if epoch < decay else 0.01})
    return pl.DataFrame(rows)


def test_ro_fall_tells_a_fall_from_a_plateau() -> None:
    """The default condition: val PGD 3.5 standard errors (sqrt(2 p (1 - p) / n), the val split's sampling error)
    below its best since the decay. A plateau after the best is not a fall; Rice et al.'s patience stops both."""
    rise = [0.40, 0.45, 0.50, 0.55, 0.58, 0.60]  # the decay at epoch 4; the best, 0.60, at epoch 5
    e = _val_curves({"fall": rise + [0.60 - 0.03 * k for k in range(1, 8)],
                     "plateau": rise + [0.595, 0.6, 0.59, 0.6, 0.595, 0.6, 0.59]}, decay=4)
    se = (2 * 0.6 * 0.4 / 1000) ** 0.5  # 0.0219: 3.5 se = 0.077, first passed at 0.51 (epoch 8)
    assert 0.6 - 0.54 < 3.5 * se <= 0.6 - 0.51
    events = ro(e)
    assert events["trial"].to_list() == ["fall"] and events["epoch"].item() == 8
    assert "4.1 standard errors" in events["evidence"].item()
    assert sorted(ro(e, patience=3, fall_z=None)["trial"]) == ["fall", "plateau"]
    # the mean of the last 3 epochs, from epoch 6 (the first whose 3 are all after the decay): 0.583 (the best),
    # 0.57, 0.54, 0.51; 3.5 x sqrt(2 p (1 - p) / 3000) = 0.045: passed at epoch 9 (0.073), not 8 (0.043)
    assert ro(e, fall_epochs=3)["epoch"].to_list() == [9]
    assert ro(_val_curves({"small val": rise + [0.60 - 0.03 * k for k in range(1, 8)]}, decay=4, n=100)).is_empty()


def test_nan_and_divergence() -> None:
    nan_trial = synth_trial("nan", epochs=6, steps=STEPS, nan_step=137)
    div = synth_trial("div", epochs=6, steps=STEPS, seed=3)
    loss = div["batches"]["loss"].to_numpy().copy()
    loss[200:] *= np.geomspace(5, 1e4, loss.size - 200)  # finite blow-up from step 200
    div["batches"] = div["batches"].set_column(
        div["batches"].schema.get_field_index("loss"), "loss", pa.array(loss, pa.float32())
    )
    b, _, _ = frames(nan_trial, div)
    events = nan(b)
    rows = {(t, ev.split(":")[0]): step for t, ev, step in events.select("trial", "evidence", "step").iter_rows()}
    assert rows[("nan", "nonfinite")] == 137
    assert "loss" in events.filter(pl.col("trial") == "nan")["evidence"].item()
    # by hand: loss > 10x the mean loss of all earlier epochs, 5 batches in a row
    start = np.arange(loss.size) // STEPS * STEPS
    high = np.array([s >= 50 and loss[t] > 10 * loss[:s].mean() for t, s in enumerate(start)])
    run5 = np.convolve(high, np.ones(5), "valid") == 5
    assert rows[("div", "diverged")] == 4 + int(np.argmax(run5)) > 200
    assert ("div", "nonfinite") not in rows


def test_prefix_property() -> None:
    """Running on what the stopper has seen so far = the full run's events up to there."""
    trials = [
        synth_trial("co", co_epoch=4, epochs=10, steps=STEPS, seed=1),
        synth_trial("warm", shape="warmup", co_epoch=6, epochs=10, steps=STEPS, seed=2),
        synth_trial("ro", ro_peak=8, epochs=30, steps=STEPS, seed=3),
        synth_trial("nan", nan_step=333, epochs=10, steps=STEPS, seed=4),
        synth_trial("ok", shape="noisy", epochs=10, steps=STEPS, seed=5),
    ]
    full = detect(*frames(*trials))
    assert set(full["kind"]) == {"co_energy", "co_pgd_probe", "ro", "nan"}
    cuts = sorted({*range(3, 10 * STEPS, 41), *range(STEPS - 1, 30 * STEPS, STEPS), 200, 214, 215, 333})
    for last in cuts:
        done = (last + 1) // STEPS - 1
        part = detect(*frames(*(prefix(t, last, STEPS) for t in trials)))
        expected = full.filter(
            pl.when(pl.col("step").is_not_null())
            .then(pl.col("step") <= last)
            .otherwise(pl.col("epoch") <= done)
        )
        assert part.equals(expected), f"prefix up to step {last}"


def test_events_schema_and_input_forms() -> None:
    trial = synth_trial("t", co_epoch=5, epochs=8, steps=STEPS)
    b, e, p = frames(trial)
    events = detect(b, e, p)
    assert events.schema == EVENT_SCHEMA
    assert set(events["action"]) == {"logged"}
    # lazy input, shuffled rows and a re-logged (duplicated) step give the same events
    shuffled = b.sample(fraction=1.0, shuffle=True, seed=0)
    relogged = pl.concat([b, b.filter(pl.col("step").is_between(100, 120))])
    for batches in (b.lazy(), shuffled, relogged):
        assert detect(batches, e.lazy(), p.lazy()).equals(events)
    assert detect().is_empty() and detect().schema == EVENT_SCHEMA
    empty = b.clear()
    assert detect(empty, e.clear(), p.clear()).is_empty()


def test_missing_energy_columns_are_silent() -> None:
    """A method/schema version without energies (all null) raises no energy events."""
    t = synth_trial("t", epochs=6, steps=STEPS, co_epoch=3)
    b = t["batches"]
    for col in ("de", "de_y", "de_std"):
        i = b.schema.get_field_index(col)
        b = b.set_column(i, col, pa.nulls(b.num_rows, pa.float32()))
    events = co_energy(pl.from_arrow(b))
    assert events.is_empty()
    assert pc.sum(pc.is_null(b["de"])).as_py() == b.num_rows


@pytest.mark.parametrize("every", [1, 2, 5])
def test_co_found_on_sparse_natural_rows(every: int) -> None:
    """Rows without f(x) (telemetry.natural_every) hold null dE: the batch detector works on the others
    and the nonfinite detector does not take null for NaN."""
    tables = synth_trial("t", co_epoch=6, epochs=10, steps=200, seed=3)
    b, e, p = frames(tables)
    sparse = b.with_columns(pl.when(pl.col("step") % every == 0).then(pl.col(c)).alias(c) for c in NAT_COLUMNS)
    assert sparse["de"].null_count() == b.height - b.height // every
    energy = co_energy(sparse, e, p)
    assert sources(energy)["batch"] == 6
    batch_step = energy.filter(pl.col("step").is_not_null())["step"].item()
    assert 6 * 200 <= batch_step < 6 * 200 + 20 * every  # within the window of measured rows
    assert detect(sparse.filter(pl.col("epoch") < 6), e.filter(pl.col("epoch") < 6),
                  p.filter(pl.col("epoch") < 6)).is_empty()


def test_with_actions_marks_only_the_recorded_stop() -> None:
    from analysis.detectors import with_actions

    events = pl.DataFrame({"trial": ["a", "a", "b"], "kind": ["co_energy", "ro", "co_energy"], "epoch": [2, 3, 2],
                           "action": ["logged"] * 3}, schema_overrides={"epoch": pl.Int32})
    recorded = pl.DataFrame({"trial": ["a"], "kind": ["co_energy"], "epoch": [2], "action": ["stopped"]},
                            schema_overrides={"epoch": pl.Int32})
    assert with_actions(events, recorded)["action"].to_list() == ["stopped", "logged", "logged"]
    assert with_actions(events, recorded.clear())["action"].to_list() == ["logged"] * 3


def test_ro_reads_the_held_out_drop_alone_when_asked() -> None:
    """energy='held_out': -dE(x,y) of val, which the synthetic RO trial drifts up 0.06 an epoch after its peak."""
    _, e, _ = frames(synth_trial("ro", epochs=40, steps=20, ro_peak=8, seed=1))
    held = ro(e, patience=None, gap_rise=3.0, energy="held_out", fall_z=None)
    assert held["trial"].to_list() == ["ro"] and 8 < held["epoch"].item() <= 11
    assert "val -dE(x,y)" in held["evidence"].item()
    with pytest.raises(ValueError, match="energy"):
        ro(e, energy="probe")
