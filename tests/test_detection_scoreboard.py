"""The detection scoreboard on the committed corpus (benchmarks/detection/corpus/): labels, baselines, scores."""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "detection"))

import choose  # noqa: E402
import choose_trigger  # noqa: E402
import scoreboard  # noqa: E402

from analysis.detectors import co_pgd_probe  # noqa: E402
from orchestrator.config import DEFAULT_STOP_ON  # noqa: E402


@pytest.mark.parametrize("acc, expected", [
    ([0.30, 0.32, 0.15, 0.30], ("collapse", 2)),  # half the best so far, 0.17 below it
    ([0.12, 0.05, 0.06], ("never_robust", 0)),  # 0.12 - 0.05 < 0.10: not a collapse, and far below R
    ([0.30, 0.40, 0.45, 0.39], ("robust_overfitting", 3)),  # best at 2, last 0.06 below it
    ([0.30, 0.40, 0.45, 0.42], ("healthy", None)),  # a 0.03 dip is noise
])
def test_labels_follow_the_written_definitions(acc, expected) -> None:
    assert scoreboard.label(acc, reference=0.4) == expected


def test_wong_probe_fires_on_a_drop_above_point_two_of_one_batch() -> None:
    rows = []
    for epoch, right in enumerate([100, 90, 65, 63]):  # of 128: drops 0.08, 0.195, 0.02
        rows += [{"trial": "a", "epoch": epoch, "sample_id": i, "correct_adv": i < right} for i in range(200)]
    rows += [{"trial": "b", "epoch": e, "sample_id": i, "correct_adv": i < r} for e, r in enumerate([100, 70])
             for i in range(128)]
    stops = scoreboard.wong_probe(pl.DataFrame(rows)).sort("trial")
    assert stops["trial"].to_list() == ["b"] and stops["epoch"].to_list() == [1]


def test_adaptive_rule_fires_above_mean_plus_two_sd_of_the_past() -> None:
    def stops(last: list[float]) -> list[tuple]:
        values = [0.1, 0.2] * 15 + last  # epoch 0, then epoch 1: mean 0.15, sd 0.05 before step 30
        frame = pl.DataFrame({"trial": "a", "epoch": [0] * 30 + [1] * len(last), "step": range(len(values)),
                              "aae_frac": values})
        return scoreboard.adaptive(frame, "aae_frac").rows()

    assert stops([0.26, 0.1]) == [("a", 1, None)]  # 0.26 > 0.25: a stop after epoch 1 (the stopper acts then)
    assert stops([0.24, 0.1]) == []


def test_scoreboard_runs_on_the_committed_corpus() -> None:
    lab, board, _ = scoreboard.scoreboard("all")
    assert lab.height >= 15 and set(lab["split"]) <= {"dev", "test", "outside"}
    assert set(lab["label"]) <= {"collapse", "never_robust", "robust_overfitting", "healthy"}
    assert lab.filter(pl.col("label") == "collapse")["onset"].min() >= 1
    n_collapse = (lab["label"] == "collapse").sum()
    n_healthy = (lab["label"] == "healthy").sum()
    for row in board.iter_rows(named=True):
        found, total = map(int, row["collapses"].split("/"))
        assert total == n_collapse and 0 <= found <= total
        assert int(row["false_stops"].split("/")[1]) == n_healthy
        assert 0 <= row["saved_steps"] < 1
        assert 0 <= row["harm_mean"] <= row["harm_worst"] <= 1
        probe_cost = row["saved_steps_co_prone"] - row["saved_net_co_prone"]
        assert probe_cost > 0 if row["reads_probe"] else probe_cost == 0, row
    rules = set(board["rule"])
    assert {f"default stop_on ({', '.join(DEFAULT_STOP_ON)})", "baseline: Wong PGD-probe (128, drop 0.2)"} <= rules
    reads_probe = dict(board.select("rule", "reads_probe").iter_rows())
    assert reads_probe["co_energy epoch"] and not reads_probe["co_energy batch"]  # its epoch source is the probe's dE
    oracle = board.row(by_predicate=pl.col("rule").str.starts_with("oracle"), named=True)
    assert oracle["recall_collapse"] == 1 and oracle["false_stops"].startswith("0/")


def test_harm_and_net_savings_of_a_stop_on_a_hand_made_trial() -> None:
    """A single-step trial of 4 epochs x 10 steps, val PGD 0.3 0.5 0.2 0.6, stopped after epoch 2
    with a probe of 5 step-equivalents an epoch: it keeps 0.5 of the 0.6 best (harm 0.1), trains 30
    of 40 steps and runs 3 probes (15 steps): 1 - 45/40 net, 1 - 30/40 gross."""
    lab = pl.DataFrame({"trial": ["t"], "method": ["fgsm"], "eps": [0.3], "n": [1000], "point": ["p"],
                        "label": ["collapse"], "onset": [2], "onset_step": [20], "steps_per_epoch": [10],
                        "total_steps": [40], "epochs": [4], "probe_steps": [5.0], "acc": [[0.3, 0.5, 0.2, 0.6]]})
    stops = pl.DataFrame({"trial": ["t"], "epoch": [2], "step": [None]}, schema_overrides={"step": pl.Int64})
    row = scoreboard.score(lab, stops, probe=True)
    assert row["harm_mean"] == pytest.approx(0.1) and row["harm_worst"] == pytest.approx(0.1)
    assert row["saved_steps_co_prone"] == pytest.approx(0.25)
    assert row["saved_net_co_prone"] == pytest.approx(1 - 45 / 40)
    assert scoreboard.score(lab, stops)["saved_net_co_prone"] == pytest.approx(0.25)
    assert scoreboard.score(lab, stops.clear())["harm_worst"] == 0  # not stopped: nothing lost


def test_each_trials_stop_agrees_with_the_default_rules_scoreboard_row() -> None:
    """scoreboard.py --stops (the per-trial table behind docs/detection.md's reasons) on the live test seed 13."""
    _, board, stops = scoreboard.scoreboard("test", seeds=(13,))
    row = board.filter(pl.col("rule").str.starts_with("default")).row(0, named=True)
    coll = stops.filter(pl.col("label") == "collapse")
    assert row["in_window"] == f"{coll['in_window'].sum()}/{coll.height}"
    assert row["collapses"] == f"{coll['stop_epoch'].is_not_null().sum()}/{coll.height}"
    healthy = stops.filter(pl.col("label") == "healthy")
    assert row["false_stops"] == f"{healthy['stop_epoch'].is_not_null().sum()}/{healthy.height}"
    assert row["harm_mean"] == pytest.approx(stops["harm"].fill_null(0).mean(), abs=1e-3)
    mid = coll.filter(pl.col("stop_step").is_not_null())
    assert row["stopped_mid_epoch"] == f"{mid.height}/{coll['stop_epoch'].is_not_null().sum()}"
    assert mid["evidence"].str.starts_with("step: mid-epoch").all()


def test_the_probe_on_fire_variant_runs_the_epoch_end_probe_after_a_fired_epoch_only() -> None:
    """Epochs 0-3 of 10 steps, a probe row at each epoch's end and a triggered one at step 14 (epoch 1):
    the variant keeps the epoch-end probes of epochs 0 and 1 and the triggered one; stopped after epoch 2
    (not stopped mid-epoch) it ran 2 epoch-end probes and 1 triggered: 3 x 5 = 15 step-equivalents."""
    ends = pl.DataFrame({"trial": "t", "epoch": [0, 1, 2, 3], "step": [9, 19, 29, 39], "split": "probe",
                         "train_loss": 1.0, "acc_pgd": 0.5})
    fired = pl.DataFrame({"trial": ["t"], "epoch": [1], "step": [14], "split": ["probe"], "train_loss": [None],
                          "acc_pgd": [0.5]}, schema_overrides={"train_loss": pl.Float64})
    val = ends.with_columns(split=pl.lit("val"))
    kept = scoreboard.gated(pl.concat([ends, fired, val]))
    probe = kept.filter(pl.col("split") == "probe").sort("step")
    assert probe.select("epoch", "step").rows() == [(0, 9), (1, 14), (1, 19)] and kept.filter(pl.col("split") == "val").height == 4
    lab = pl.DataFrame({"trial": ["t"], "method": ["fgsm"], "eps": [0.3], "n": [1000], "point": ["p"],
                        "label": ["healthy"], "onset": [None], "onset_step": [None], "steps_per_epoch": [10],
                        "total_steps": [40], "epochs": [4], "probe_steps": [5.0], "acc": [[0.3, 0.5, 0.5, 0.6]]},
                       schema_overrides={"onset": pl.Int64, "onset_step": pl.Int64})
    stops = pl.DataFrame({"trial": ["t"], "epoch": [2], "step": [None]}, schema_overrides={"step": pl.Int64})
    row = scoreboard.score(lab, stops, probe=True, mid_probes=fired.select("trial", "step"),
                           end_probes=probe.filter(pl.col("train_loss").is_not_null()).select("trial", "epoch"))
    assert row["saved_net_co_prone"] == pytest.approx(1 - (30 + 15) / 40)
    assert row["probes_per_healthy_epoch"] == pytest.approx(3 / 4) and row["triggered_per_healthy_epoch"] == pytest.approx(1 / 4)


def test_oracle_stops_each_bad_trial_at_its_onset() -> None:
    lab = scoreboard.labels(scoreboard.load())
    stops = scoreboard.oracle(lab)
    bad = lab.filter(pl.col("label") != "healthy")
    assert sorted(stops["trial"]) == sorted(bad["trial"])
    assert stops.join(bad, on="trial").filter(pl.col("epoch") != pl.col("onset")).is_empty()


def test_defaults_are_the_dev_split_choice() -> None:
    board = choose.grid()
    assert board.height == 4 * 3 * 3 and set(board["false_stops"].str.split("/").list.last()) == {
        str((scoreboard.labels(scoreboard.load()).filter((pl.col("split") == "dev") & (pl.col("segment") == "co"))
             ["label"] == "healthy").sum())}
    best = choose.choose(board)
    defaults = {k: v.default for k, v in inspect.signature(co_pgd_probe).parameters.items() if k in choose.GRID}
    assert {k: best[k] for k in choose.GRID} == defaults
    assert best["false_stops"].startswith("0/")


def test_trigger_defaults_are_the_dev_split_choice_of_the_single_step_trials() -> None:
    """The trigger was chosen before the RO segment existed; its dev trials must not move the choice."""
    from workloads.telemetry import trigger as shipped

    board = choose_trigger.grid()
    assert board.height == len(choose_trigger.SIGNAL_SETS) * 3 * 3
    assert set(board["collapses"]) == {16}  # the single-step dev trials' collapses, no RO-segment trial
    best = choose_trigger.choose(board)
    assert choose_trigger.SIGNAL_SETS[best["signals"]] == shipped.TRIGGER_SIGNALS
    assert (best["k"], best["h"]) == (shipped.K, shipped.H)
    assert best["probes_per_healthy_epoch"] <= choose_trigger.MAX_HEALTHY_RATE
    replay = choose_trigger.score("dev").filter(pl.col("segment") == "co").row(0, named=True)  # --score dev
    assert {k: replay[k] for k in ("probes_per_healthy_epoch", "in_onset_epoch", "collapses")} == \
        {k: best[k] for k in ("probes_per_healthy_epoch", "in_onset_epoch", "collapses")}


def test_headroom_counts_onset_epochs_above_the_healthy_epochs_quantiles() -> None:
    """choose_trigger --headroom on dev (docs/detection.md): stricter quantiles, fewer onset epochs above them."""
    table = choose_trigger.headroom("dev")
    counts = [int(x.split("/")[0]) for x in table["collapse epochs above it"]]
    assert table["peak z"].is_sorted() and counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert {x.split("/")[1] for x in table["collapse epochs above it"]} == {"16"}  # the dev collapses


def test_choice_prefers_no_false_stops_then_recall_then_the_strictest_tie() -> None:
    rows = [
        {"ratio": 0.7, "min_drop": 0.05, "z": 2.0, "false_stops": "1/8", "collapses": "5/5", "median_delay_epochs": 0.0},
        {"ratio": 0.6, "min_drop": 0.1, "z": 3.0, "false_stops": "0/8", "collapses": "5/5", "median_delay_epochs": 0.0},
        {"ratio": 0.5, "min_drop": 0.1, "z": 3.0, "false_stops": "0/8", "collapses": "5/5", "median_delay_epochs": 0.0},
        {"ratio": 0.5, "min_drop": 0.1, "z": 4.0, "false_stops": "0/8", "collapses": "4/5", "median_delay_epochs": 0.0},
    ]
    assert {k: choose.choose(pl.DataFrame(rows))[k] for k in choose.GRID} == {"ratio": 0.5, "min_drop": 0.1, "z": 3.0}


def test_free_signal_thresholds_come_from_dev_and_stop_no_healthy_dev_trial() -> None:
    c = scoreboard.load()
    dev = scoreboard.labels(c).filter(pl.col("split") == "dev")
    shifts = scoreboard.epoch_shifts(c["batches"].filter(pl.col("trial").is_in(dev["trial"].to_list())))
    for signal in scoreboard.FREE_SIGNALS:
        t = scoreboard.dev_threshold(shifts, dev, signal)
        row = scoreboard.score(dev, scoreboard.shift_rule(shifts, signal, t))
        assert row["false_stops"].startswith("0/"), (signal, t, row)
        looser = scoreboard.score(dev, scoreboard.shift_rule(shifts, signal, 0.99 * t - 1e-9))
        if t > 1e-6:  # just below the threshold the most-moving healthy trial is stopped
            assert not looser["false_stops"].startswith("0/"), (signal, t)


def test_shift_rule_compares_an_epoch_mean_with_the_median_of_earlier_epochs() -> None:
    aae = [0.01, 0.03, 0.02, 0.04, 0.30, 0.35]  # epoch 4 rises 0.275 above the median 0.025
    batches = pl.DataFrame({"trial": "a", "epoch": [e for e in range(6) for _ in range(3)],
                            **{s: [0.0] * 18 for s in scoreboard.FREE_SIGNALS}})
    batches = batches.with_columns(aae_frac=pl.Series([v for v in aae for _ in range(3)]))
    shifts = scoreboard.epoch_shifts(batches)
    assert scoreboard.shift_rule(shifts, "aae_frac", 0.2)["epoch"].to_list() == [4]
    assert scoreboard.shift_rule(shifts, "aae_frac", 0.33).is_empty()  # epoch 5: 0.35 - 0.03 = 0.32


def test_pack_merges_a_run_into_the_committed_corpus_without_losing_trials(tmp_path) -> None:
    """A fresh clone resumes the corpus: `pack` keeps the committed trials and adds the run's; a
    trial in both comes from the run; `run` skips what the corpus holds."""
    import shutil

    import corpus
    from support.trained import trained, trial_of

    sweep = trained("erm")
    dest = tmp_path / "corpus"
    shutil.copytree(corpus.CORPUS, dest)
    before = pl.read_parquet(dest / "trials.parquet")
    new = trial_of(sweep)
    counts = corpus.pack(sweep, dest)
    after = pl.read_parquet(dest / "trials.parquet")
    assert set(after["trial"]) == set(before["trial"]) | {new} and counts["trials"] == after.height
    assert after.filter(pl.col("trial") == new)["split"].to_list() == ["dev"]  # seed 0
    batches = pl.read_parquet(dest / "batches.parquet")
    assert batches.filter(pl.col("trial") == new).height > 0
    assert batches.filter(pl.col("trial") != new).height == pl.read_parquet(corpus.CORPUS / "batches.parquet").height
    corpus.pack(sweep, dest)  # packing again replaces the run's rows, it does not add them twice
    assert pl.read_parquet(dest / "batches.parquet").height == batches.height
    assert corpus.packed() == set(before["trial"])


def test_auc_counts_ties_half_and_needs_both_classes() -> None:
    import signals

    pos = np.array([False, False, True, True])
    assert signals.auc(np.array([0.1, 0.2, 0.3, 0.4]), pos) == 1.0
    assert signals.auc(np.array([0.4, 0.3, 0.2, 0.1]), pos) == 0.0
    assert signals.auc(np.array([0.1, 0.3, 0.3, 0.4]), pos) == pytest.approx(0.875)  # one tied pair of 4
    assert np.isnan(signals.auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_signal_table_on_the_committed_corpus_is_causal_and_ranks_the_probe_first() -> None:
    """Each trial-epoch's score is the largest move so far (never falls); the probe, which defines the
    labels' timing, separates best; every free signal has an AUC and an interval around it."""
    import signals

    c = scoreboard.load()
    lab = scoreboard.labels(c).filter(pl.col("split") == "test")
    t = signals.scores(c, lab)
    assert set(t["label"]) == {"collapse", "healthy"}
    assert not t.filter(pl.col("label") == "healthy")["positive"].any()
    assert t.select((pl.col("de_y (epoch mean)").diff().over("trial") >= 0).all()).item()
    board = signals.table(t, boot=50)
    assert board["signal"][0] == "PGD probe relative fall" and board["cost"][0] == "PGD probe"
    assert board.filter(pl.col("cost") == "free").height == 2 * len(scoreboard.FREE_SIGNALS)
    for r in board.iter_rows(named=True):
        assert r["trial_lo"] <= r["trial_auc"] <= r["trial_hi"] and r["epoch_lo"] <= r["epoch_auc"] <= r["epoch_hi"]


def test_ro_signal_table_reads_only_the_epochs_after_the_decay_and_marks_the_window() -> None:
    """Two trials, decay at epoch 3 of 9: an RO one (best at 4, onset 5: window epochs 5-7, 8 left out) whose
    batch loss falls after the decay, and a healthy one. Scores are largest-so-far moves; the val fall is in
    standard errors of the val split (n 1000); every AUC lies in its interval."""
    import signals

    def trial(name: str, val: list[float], loss: list[float]) -> tuple[pl.DataFrame, pl.DataFrame]:
        epochs = pl.DataFrame({"trial": name, "epoch": list(range(9)) * 2, "step": list(range(9)) * 2,
                               "split": ["val"] * 9 + ["probe"] * 9,
                               "lr": [0.1, 0.1, 0.1, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03] * 2, "n": [1000] * 9 + [256] * 9,
                               "acc_pgd": val + [v + 0.1 for v in val], "de_y": [-1.0, -1.1] * 9, "train_loss": 1.0})
        batches = pl.DataFrame({"trial": name, "epoch": list(range(9)), "de": [0.5, 0.6] * 4 + [0.5],
                                "de_y": -1.0, "de_std": 0.3, "acc_adv": 0.4, "loss": loss})
        return epochs, batches

    ro_e, ro_b = trial("ro", [0.3, 0.4, 0.45, 0.55, 0.60, 0.58, 0.55, 0.52, 0.50],
                       [1.0, 0.98, 0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    ok_e, ok_b = trial("ok", [0.3, 0.4, 0.45, 0.55, 0.56, 0.57, 0.56, 0.57, 0.58], [1.0, 0.98, 0.99, 0.95, 0.94, 0.95, 0.94, 0.95, 0.94])
    c = {"epochs": pl.concat([ro_e, ok_e]), "batches": pl.concat([ro_b, ok_b])}
    lab = pl.DataFrame({"trial": ["ro", "ok"], "label": ["robust_overfitting", "healthy"], "onset": [5, None]},
                       schema_overrides={"onset": pl.Int64})
    t = signals.ro_scores(c, lab, window=2).sort("trial", "epoch")
    assert t["epoch"].to_list() == [3, 4, 5, 6, 7, 8] * 2  # only after the decay
    ro = t.filter(pl.col("trial") == "ro")
    assert ro["positive"].to_list() == [False, False, True, True, True, True]
    assert ro["window"].to_list() == [True, True, True, True, True, None]  # up to best + 3; epoch 8 is late, not false
    assert not t.filter(pl.col("trial") == "ok")["positive"].any()
    fall = ro[signals.RO_FALL].to_list()
    assert fall[-1] == pytest.approx(0.10 / (2 * 0.6 * 0.4 / 1000) ** 0.5)
    assert all(a <= b for a, b in zip(fall, fall[1:]))  # largest so far: causal
    headroom = signals.window_headroom(t)
    assert headroom["batch loss (epoch mean)"] == "1/1"  # falls past the healthy trial's largest move by epoch 7
    assert headroom["batch de_std (epoch mean)"] == "0/1"  # flat in both
    board = signals.table(t, boot=20)
    loss = board.filter(pl.col("signal") == "batch loss (epoch mean)").row(0, named=True)
    assert loss["cost"] == "free" and loss["trial_auc"] == 1.0
    for r in board.iter_rows(named=True):
        for level in ("trial", "epoch", "window"):
            assert np.isnan(r[f"{level}_auc"]) or r[f"{level}_lo"] <= r[f"{level}_auc"] <= r[f"{level}_hi"]


def test_ro_label_counts_only_after_the_decay() -> None:
    spike = [0.30, 0.60, 0.40, 0.45, 0.50, 0.52, 0.50]  # a noisy 0.60 before the decay at epoch 3
    assert scoreboard.label(spike, 0.5) == ("robust_overfitting", 2)  # the corpus's rule: best anywhere
    assert scoreboard.label(spike, 0.5, decay=3) == ("healthy", None)
    fall = [0.30, 0.40, 0.50, 0.60, 0.58, 0.54]  # Rice et al.: the peak after the decay at 2, then down
    assert scoreboard.label(fall, 0.5, decay=2) == ("robust_overfitting", 4)
    assert scoreboard.label(fall[:5], 0.5, decay=2) == ("healthy", None)  # 0.02 below its best: not yet


def test_ro_score_of_hand_made_stops() -> None:
    """Two RO trials (best epoch 3; stopped at 5 and at 9) and a healthy one stopped at 2: one in the
    window (no later than 3 epochs after the best), one false stop; harm 0 for the RO stops (best.pt kept),
    0.1 for the healthy one (best 0.6 at epoch 4, kept 0.5)."""
    acc = [0.3, 0.4, 0.5, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    lab = pl.DataFrame({"trial": ["a", "b", "h"], "label": ["robust_overfitting", "robust_overfitting", "healthy"],
                        "onset": [4, 4, None], "acc": [acc, acc, [0.3, 0.4, 0.5, 0.45, 0.6]],
                        "steps_per_epoch": [10, 10, 10], "total_steps": [100, 100, 50]})
    stops = pl.DataFrame({"trial": ["a", "b", "h"], "epoch": [5, 9, 2]})
    row = scoreboard.ro_score(lab, stops, window=2)
    assert row["ro_in_window"] == "1/2" and row["ro_stopped"] == "2/2" and row["false_stops"] == "1/1"
    assert row["median_epochs_after_best"] == 4  # 2 and 6 epochs after the best
    assert row["harm_mean_stopped"] == pytest.approx(0.1 / 3) and row["harm_worst"] == pytest.approx(0.1)
    assert row["saved_steps"] == pytest.approx(1 - (60 + 100 + 30) / 250)


def test_choose_ro_follows_its_written_rule() -> None:
    import choose_ro

    def row(p, g, false, in_window, harm, stopped=0, z=None):
        return {"patience": p, "gap_rise": g, "fall_z": z, "fall_epochs": 1 if z else None, "false_stops": false,
                "ro_in_window": in_window, "ro_stopped": stopped, "harm_mean": harm}

    rows = [row(2, None, 1, 6, 0.0),  # most in the window, but a false stop
            row(5, 3.0, 0, 4, 0.02),  # no false stop, too much harm
            row(10, 3.0, 0, 2, 0.005), row(10, None, 0, 2, 0.005), row(20, 5.0, 0, 1, 0.0)]
    assert choose_ro.choose(rows) == row(10, None, 0, 2, 0.005)  # ties: the fewer conditions
    assert choose_ro.choose(rows[:2]) == rows[1]  # nothing under the harm limit: the fewest false stops alone
    # as many in the window: the most RO trials stopped at all (step 4), before harm and the number of conditions
    more = [row(None, 12.0, 0, 2, 0.0, stopped=2), row(None, None, 0, 2, 0.003, stopped=11, z=3.5),
            row(None, None, 0, 2, 0.003, stopped=11, z=3.0)]
    assert choose_ro.choose(rows + more) == more[1]  # then the larger fall_z
    n_gap, n_fall = len(choose_ro.GAP_RISE) - 1, len(choose_ro.FALL_Z) * len(choose_ro.FALL_EPOCHS)
    assert len(choose_ro.candidates()) == (len(choose_ro.PATIENCE) * n_gap * len(choose_ro.ENERGY) + len(choose_ro.PATIENCE) - 1
                                           + n_fall * (n_gap * len(choose_ro.ENERGY) + 1))


def test_every_trial_of_every_grid_builds_a_valid_config(tmp_path) -> None:
    """`corpus.py run` validates every config before training: the PGD-3 points' `attack.alpha=0.3/4` among them."""
    import corpus
    from co_onsets import build

    for grid in corpus.GRIDS:
        for t in corpus.trials((0,), grid):
            cfg = build(t, str(tmp_path))
            if "attack.alpha=0.3/4" in t:
                assert cfg.attack.alpha == pytest.approx(0.075)


def test_a_trial_added_later_moves_no_other_trials_label() -> None:
    """R(eps, n) comes from seeds 0-5: the corpus's labels with and without test seed 12's trials agree."""
    c = scoreboard.load()
    assert c["trials"].filter(pl.col("seed") == 12).height  # the live test seed is in the corpus
    without = {k: v.filter(~pl.col("trial").str.ends_with("-s12")) for k, v in c.items()}
    before = scoreboard.labels(without).select("trial", "label", "onset")
    after = scoreboard.labels(c).select("trial", "label", "onset").join(before.select("trial"), on="trial")
    assert before.sort("trial").equals(after.sort("trial"))


def test_ro_segment_grid_and_its_trials_segment() -> None:
    import corpus

    ro = corpus.trials((0, 3), "ro")
    assert len(ro) == 2 * len(corpus.RO) and all("model=wide_cnn" in t and "epochs=100" in t for t in ro)
    assert {corpus.segment_of(corpus.trial_of(t)) for t in ro} == {"ro"}
    assert {corpus.segment_of(corpus.trial_of(t)) for t in corpus.trials((0,), "corpus")} == {"co"}
    assert corpus.split_of(3) == "test" and corpus.split_of(0) == "dev"
    noisy = corpus.trials((0,), "ro_noise")
    assert len(noisy) == len(corpus.RO_NOISE) and {corpus.segment_of(corpus.trial_of(t)) for t in noisy} == {"ro_noise"}
    assert all("data.label_noise=0.4" in t for t in noisy)


def test_the_label_noise_segments_trials_are_labelled_after_their_decay() -> None:
    """`ro_noise` trials are labelled as the `ro` segment's: the best epoch from the decay on (a synthetic curve
    whose best is before the decay is healthy there, robust overfitting in the single-step corpus)."""
    c = scoreboard.load()
    trial = "pgd5-e0.10-n500-noise0.4-s0"
    curve = [0.3, 0.6, 0.5, 0.52, 0.53, 0.53]  # its peak at epoch 1, the decay at epoch 2
    lrs = [0.05, 0.05, 0.015, 0.015, 0.015, 0.015]
    epochs = pl.DataFrame({"trial": trial, "split": "val", "epoch": range(6), "acc_pgd": curve, "lr": lrs,
                           "step": [8 * e + 7 for e in range(6)]})
    row = c["trials"].filter(pl.col("segment") == "ro").head(1).with_columns(
        trial=pl.lit(trial), segment=pl.lit("ro_noise"), seed=pl.lit(0, pl.Int64), split=pl.lit("dev"))
    synthetic = {"trials": row.select(c["trials"].columns),
                 "epochs": epochs.cast({"epoch": c["epochs"].schema["epoch"], "step": c["epochs"].schema["step"]})}
    lab = scoreboard.labels(synthetic).row(0, named=True)
    assert lab["label"] == "healthy", lab
    as_co = scoreboard.labels({**synthetic, "trials": synthetic["trials"].with_columns(segment=pl.lit("co"))})
    assert as_co["label"].item() == "robust_overfitting"


def test_ro_scoreboard_runs_on_the_committed_segment() -> None:
    lab, board, stops = scoreboard.scoreboard("all", segment="ro")
    assert lab.height >= 6 and set(lab["segment"]) == {"ro"}
    n_ro, n_healthy = (lab["label"] == "robust_overfitting").sum(), (lab["label"] == "healthy").sum()
    assert n_ro >= 1 and n_healthy >= 1
    rows = {r["rule"]: r for r in board.iter_rows(named=True)}
    oracle = rows["oracle: stop at the labelled onset (the epoch after the best)"]
    assert oracle["ro_in_window"] == f"{n_ro}/{n_ro}" and oracle["false_stops"] == f"0/{n_healthy}"
    default = rows[f"default stop_on ({', '.join(DEFAULT_STOP_ON)})"]
    assert default["false_stops"].endswith(f"/{n_healthy}") and 0 <= default["saved_steps"] < 1
    per_trial = stops.filter(pl.col("label") == "robust_overfitting")  # --stops: each trial behind the row
    assert default["ro_in_window"] == f"{per_trial['in_window'].sum()}/{n_ro}"
    assert default["ro_stopped"] == f"{per_trial['stop_epoch'].is_not_null().sum()}/{n_ro}"
    healthy = stops.filter(pl.col("label") == "healthy")
    assert default["false_stops"] == f"{healthy['stop_epoch'].is_not_null().sum()}/{n_healthy}"
    assert (per_trial["after_best"] == per_trial["stop_epoch"] - per_trial["best"]).all()
