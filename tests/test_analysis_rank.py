"""Ranking: per-trial metrics and aggregation over seeds, checked against a hand computation."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import polars as pl
import pytest

from analysis.detectors import empty_events
from analysis.rank import console, display, export, rank, trial_metrics

# val acc_pgd per epoch (and acc_nat = acc_pgd + 0.3) for 2 configs x 3 seeds
CURVES = {
    "a0": [0.30, 0.40, 0.45, 0.42],
    "a1": [0.32, 0.44, 0.41, 0.40],
    "a2": [0.31, 0.38, 0.43, 0.43],
    "b0": [0.20, 0.25, 0.01, 0.02],
    "b1": [0.22, 0.28, 0.33, 0.35],
    "b2": [0.25, 0.02, 0.01, 0.01],
}


def _epochs() -> pl.DataFrame:
    rows = [
        {"trial": t, "epoch": e, "split": split, "acc_pgd": acc, "acc_nat": acc + 0.3}
        for t, curve in CURVES.items()
        for e, acc in enumerate(curve)
        for split in ("val", "probe")
    ]
    return pl.DataFrame(rows, schema_overrides={"epoch": pl.Int32, "acc_pgd": pl.Float32, "acc_nat": pl.Float32})


def _trials() -> pl.DataFrame:
    return pl.DataFrame([
        {"trial": t, "sweep": "s", "status": "diverged" if t == "b2" else "finished", "has_config": True,
         "method.name": "fgsm", "attack.eps": 0.15 if t[0] == "a" else 0.3, "seed": int(t[1]),
         "trial_id": t, "out": f"/runs/{t}"}
        for t in CURVES
    ])


def _events() -> pl.DataFrame:
    ev = pl.DataFrame({"trial": ["b0", "b0", "b2"], "kind": ["co_energy", "co_pgd_probe", "co_pgd_probe"],
                       "epoch": [2, 2, 1]}, schema_overrides={"epoch": pl.Int32})
    return pl.concat([empty_events(), ev], how="diagonal")


def test_trial_metrics() -> None:
    m = trial_metrics(_epochs(), _events())
    a0 = m.filter(pl.col("trial") == "a0").row(0, named=True)
    assert a0["robust_best"] == pytest.approx(0.45) and a0["robust_best_epoch"] == 2
    assert a0["robust_final"] == pytest.approx(0.42) and a0["clean_final"] == pytest.approx(0.72)
    assert a0["ro_gap"] == pytest.approx(0.03) and a0["co"] is False and a0["co_epoch"] is None
    b0 = m.filter(pl.col("trial") == "b0").row(0, named=True)
    assert b0["co"] is True and b0["co_epoch"] == 2
    assert trial_metrics(_epochs())["co"].null_count() == 6


def test_rank_aggregates_over_seeds_by_hand() -> None:
    table = rank(trial_metrics(_epochs(), _events()), _trials())
    assert set(table.columns[:2]) == {"attack.eps", "method.name"}  # seed, trial_id, out, ... dropped
    assert table["attack.eps"].to_list() == [0.15, 0.3]  # sorted by robust_final mean, descending
    for eps, group in ((0.15, ["a0", "a1", "a2"]), (0.3, ["b0", "b1", "b2"])):
        row = table.filter(pl.col("attack.eps") == eps).row(0, named=True)
        best = [max(CURVES[t]) for t in group]
        final = [CURVES[t][-1] for t in group]
        gap = [b - f for b, f in zip(best, final)]
        assert row["n"] == 3
        for name, values in (("robust_best", best), ("robust_final", final), ("ro_gap", gap),
                             ("clean_final", [f + 0.3 for f in final])):
            assert row[f"{name}_mean"] == pytest.approx(statistics.mean(values), abs=1e-6)
            assert row[f"{name}_std"] == pytest.approx(statistics.stdev(values), abs=1e-6)
    b = table.filter(pl.col("attack.eps") == 0.3).row(0, named=True)
    assert b["co_rate"] == pytest.approx(2 / 3) and b["n_failed_or_diverged"] == 1
    assert b["co_epoch_mean"] == pytest.approx(1.5) and b["co_epoch_std"] == pytest.approx(statistics.stdev([2, 1]))
    a = table.filter(pl.col("attack.eps") == 0.15).row(0, named=True)
    assert a["co_rate"] == 0 and a["co_epoch_mean"] is None
    # other sort keys and directions
    assert rank(trial_metrics(_epochs(), _events()), _trials(), by="co_rate")["attack.eps"].to_list() == [0.15, 0.3]
    assert rank(trial_metrics(_epochs(), _events()), _trials(), by="ro_gap", descending=True)["attack.eps"].to_list() == [0.3, 0.15]
    with pytest.raises(KeyError):
        rank(trial_metrics(_epochs()), _trials(), by="nope")
    shown = display(table)
    assert shown["robust_final"][0].startswith("0.417 ± ")


def test_trial_without_config_is_its_own_configuration() -> None:
    trials = _trials().filter(pl.col("trial") != "a2")
    table = rank(trial_metrics(_epochs(), _events()), trials)
    assert table.height == 3
    orphan = table.filter(pl.col("config") == "trial=a2").row(0, named=True)
    assert orphan["n"] == 1 and orphan["robust_final_std"] is None
    assert rank(trial_metrics(_epochs()))["config"].to_list()[0].startswith("trial=")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_export(tmp_path: Path, suffix: str) -> None:
    table = rank(trial_metrics(_epochs(), _events()), _trials())
    path = export(table, tmp_path / "out" / f"ranking{suffix}")
    if suffix == ".csv":
        back = pl.read_csv(path)
    elif suffix == ".json":
        back = pl.DataFrame(json.loads(path.read_text()))
    else:
        back = pl.read_parquet(path)
    assert back.columns == table.columns and back.height == 2
    assert back["robust_final_mean"].to_list() == pytest.approx(table["robust_final_mean"].to_list())
    with pytest.raises(ValueError):
        export(table, tmp_path / "ranking.xlsx")


def test_the_default_sweeps_console_ranking_fits_120_columns(tmp_path: Path) -> None:
    """The README's main job (sweep=default: 4 methods x 2 seeds) as `energy-at sweep` prints its ranking."""
    from orchestrator.sweep import SweepPlan
    from workloads.config import flatten

    plan = SweepPlan.from_overrides(["sweep=default", f"sweep.out={tmp_path}"])
    trials = pl.DataFrame([{"trial": t.trial_id, "has_config": True, "status": "finished", **flatten(t)}
                           for t in plan.trials])
    epochs = pl.DataFrame([{"trial": t.trial_id, "epoch": e, "split": "val", "acc_pgd": 0.1 * (1 + i % 3) + 0.01 * e,
                            "acc_nat": 0.7 + 0.01 * i} for i, t in enumerate(plan.trials) for e in range(5)])
    shown = console(rank(trial_metrics(epochs), trials))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=120, fmt_str_lengths=200, tbl_hide_dataframe_shape=True):
        text = str(shown)
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "…" not in text, text  # no column left out
    assert shown.height == 4 and "method" in shown.columns and {"robust", "best", "clean", "co"} <= set(shown.columns)
