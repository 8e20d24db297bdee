"""The energy trigger (workloads/telemetry/trigger.py): when it fires, what the trial does then, and that
`detect` replays it.

Unit tests feed hand-made streams; the live tests train real Fashion-MNIST FGSM trials (eps 0.3) with a
trigger made sensitive (h=5) so that it fires within a few epochs of a tiny run.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis.detectors import detect, trigger, with_trigger
from analysis.read import SweepLogs
from orchestrator.config import compose_trial
from workloads.telemetry.trigger import LOOKS_PER_EPOCH, Trigger
from workloads.trial import Trial

SPE = 50  # steps an epoch of the hand-made streams


def stream(epochs: int = 6, jump_at: int | None = None, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    """acc_adv and de_y of a healthy run (noise around a slow drift); from step `jump_at` on acc_adv
    jumps up by 8 of its sds (a collapse's signature)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(epochs * SPE)
    acc = 0.5 + 0.0002 * steps + 0.04 * rng.standard_normal(len(steps))
    de_y = -1.0 + 0.3 * rng.standard_normal(len(steps))
    if jump_at is not None:
        acc[jump_at:] += 0.32
    return steps // SPE, steps, {"acc_adv": acc * scale + shift, "de_y": de_y * scale + shift}


@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_stream_does_not_fire_and_a_jump_fires_within_a_few_steps(seed: int) -> None:
    assert Trigger().update(*stream(seed=seed)) == []
    fires = Trigger().update(*stream(jump_at=3 * SPE + 10, seed=seed))
    assert fires, "the jump went unnoticed"
    first = fires[0]
    assert first.signal == "acc_adv" and first.side == 1
    assert 3 * SPE + 10 <= first.step <= 3 * SPE + 20  # z about 8 a step, less k: h=40 in about 6 steps


def test_the_trigger_is_in_the_trials_own_units() -> None:
    """Scaling and shifting every signal (another model, dataset or eps) fires at the same steps."""
    base = [f.step for f in Trigger().update(*stream(jump_at=170))]
    moved = [f.step for f in Trigger().update(*stream(jump_at=170, scale=40.0, shift=-7.0))]
    assert base and base == moved


def test_a_short_epoch_is_still_looked_at_a_few_times(tmp_path) -> None:
    """79 steps an epoch under flush_every=100: the trial flushes (and the trigger looks) every 19 steps."""
    trial = Trial(compose_trial([*RUN, f"out={tmp_path}", "data.subset=5056", "telemetry.flush_every=100"]))
    assert trial.steps_per_epoch == 79 and trial.look_every == 79 // LOOKS_PER_EPOCH


def test_it_waits_for_one_epoch_and_skips_unmeasured_steps() -> None:
    epochs, steps, cols = stream(jump_at=10)  # a jump in epoch 0: no reference yet
    assert all(f.epoch >= 1 for f in Trigger().update(epochs, steps, cols))
    cols = {k: v.copy() for k, v in cols.items()}
    cols["de_y"][::2] = np.nan  # dE on every other step only (telemetry.natural_every)
    assert Trigger().update(epochs, steps, cols) == Trigger().update(epochs, steps, {**cols})


def test_a_resumed_trigger_fires_where_an_uninterrupted_one_does() -> None:
    epochs, steps, cols = stream(epochs=8, jump_at=5 * SPE + 7)
    whole = Trigger().update(epochs, steps, cols)
    cut = 3 * SPE  # a checkpoint at an epoch's end
    first = Trigger()
    head = first.update(epochs[:cut], steps[:cut], {k: v[:cut] for k, v in cols.items()})
    second = Trigger()
    second.load_state_dict(first.state_dict())
    tail = second.update(epochs[cut:], steps[cut:], {k: v[cut:] for k, v in cols.items()})
    assert whole and head + tail == whole


def test_a_mid_epoch_event_names_the_fire_that_ran_its_probe() -> None:
    events = pl.DataFrame({"trial": ["a", "a", "b"], "kind": ["co_pgd_probe", "ro", "co_pgd_probe"],
                           "epoch": [3, 4, 2], "step": [130, None, None], "evidence": ["fell", "ro", "end"]},
                          schema_overrides={"step": pl.Int64})
    fires = pl.DataFrame({"trial": ["a", "a"], "step": [100, 127], "evidence": ["trigger: x", "trigger: y"]})
    out = with_trigger(events, fires)
    assert out["evidence"].to_list() == ["fell; trigger: y", "ro", "end"]  # the latest fire before the probe


# ----------------------------------------------------------------- live

RUN = ["method=fgsm", "attack.eps=0.3", "epochs=4", "batch_size=64", "data.subset=2048", "data.val_size=128",
       "data.probe_size=128", "data.test_size=64", "eval.pgd_steps=3", "threads=1", "device=cpu",
       "telemetry.flush_every=4", "seed=0"]
SENSITIVE = 5.0  # h: fires several times in a 4-epoch run of this size


def sensitive_trial(out) -> Trial:
    trial = Trial(compose_trial([*RUN, f"out={out}", "stop_on=[]"]))
    trial.trigger = Trigger(h=SENSITIVE)
    return trial


@pytest.mark.slow
def test_the_trial_probes_at_the_flush_after_each_fire_that_detect_replays(tmp_path) -> None:
    trial = sensitive_trial(tmp_path)
    trial.run()
    logs = SweepLogs(tmp_path)
    fires = trigger(logs.scan("batches"), h=SENSITIVE)
    assert not fires.is_empty()
    spe, every = trial.steps_per_epoch, trial.look_every
    assert spe % every == 0  # so the flushes fall on multiples of look_every
    flush_after = {(f // every + 1) * every - 1 for f in fires["step"]}
    expected = sorted(s for s in flush_after if (s + 1) % spe)  # a fire in an epoch's last block: the epoch-end probe
    probes = logs.scan("epochs").filter((pl.col("split") == "probe") & pl.col("train_loss").is_null()).collect()
    assert sorted(probes["step"]) == expected
    assert probes["n"].to_list() == [128] * len(expected)


@pytest.mark.slow
def test_a_stop_at_a_mid_epoch_probe_keeps_the_best_checkpoint_and_evaluates_it_on_test(tmp_path) -> None:
    """A stop rule that ends the trial at its first mid-epoch probe (as co_pgd_probe does on a collapse)."""
    trial = sensitive_trial(tmp_path)
    asked = []

    def stop(metrics: dict) -> dict | None:
        asked.append(metrics)
        if "train_loss" in metrics:  # an epoch end
            return None
        return {"kind": "co_pgd_probe", "epoch": metrics["epoch"], "step": metrics["step"], "score": 0.3,
                "evidence": "step: mid-epoch probe acc_pgd fell"}

    summary = trial.run(stop=stop)
    mid = asked[-1]
    assert summary["status"] == "stopped" and "train_loss" not in mid
    assert summary["steps_done"] == mid["step"] + 1 and summary["steps_done"] % trial.steps_per_epoch  # within an epoch
    assert summary["reason"].startswith(f"co_pgd_probe after epoch {mid['epoch'] + 1}: step: mid-epoch probe")
    assert "; trigger: " in summary["reason"]  # the fire that ran the probe
    assert (trial.checkpoint_dir / "best.pt").exists()
    assert summary["best_epoch"] <= mid["epoch"] and 0 <= summary["best_test_acc_pgd"] <= 1
    assert 0 <= summary["test_acc_pgd"] <= 1
    # the stopped epoch has its val row (of the model at the stop) and the probe row of the stop
    epochs = SweepLogs(tmp_path).scan("epochs").filter(pl.col("epoch") == mid["epoch"]).collect()
    assert sorted(epochs["split"]) == ["probe"] * len(epochs.filter(pl.col("split") == "probe")) + ["val"]
    assert epochs.filter(pl.col("split") == "val")["step"].item() == mid["step"]
    stops = SweepLogs(tmp_path).scan("events").collect()
    assert stops["action"].to_list() == ["stopped"] and stops["step"].item() == mid["step"]
    # run again: a stopped trial stays stopped
    assert Trial(trial.cfg).run(stop=stop)["status"] == "stopped"


def test_detect_on_a_prefix_gives_the_decision_the_trial_logged(tmp_path) -> None:
    """Offline, a mid-epoch probe row in `epochs` (train_loss null) gives a co_pgd_probe event at its step whose
    evidence ends with the fire before it, as the trial's own stop event does."""
    epochs, steps, cols = stream(epochs=5, jump_at=3 * SPE + 10)
    batches = pl.DataFrame({"trial": "t", "epoch": epochs, "step": steps, "loss": 1.0, "de": cols["de_y"],
                            "de_std": 1.0, **cols})
    fire = trigger(batches).row(0, named=True)
    probe_step = fire["step"] + 3
    rows = [(e, (e + 1) * SPE - 1, 0.5, 1.0) for e in range(3)] + [(3, probe_step, 0.1, None)]
    ep = pl.DataFrame({"trial": "t", "epoch": [r[0] for r in rows], "step": [r[1] for r in rows], "split": "probe",
                       "n": 256, "acc_pgd": [r[2] for r in rows], "train_loss": [r[3] for r in rows],
                       "de": -1.0, "de_y": -1.0, "de_std": 1.0},
                      schema_overrides={"train_loss": pl.Float32})
    events = detect(batches, ep)
    stop = events.filter(pl.col("kind") == "co_pgd_probe").row(0, named=True)
    assert (stop["epoch"], stop["step"]) == (3, probe_step)
    assert stop["evidence"].startswith("step: mid-epoch probe acc_pgd 0.1") and stop["evidence"].endswith(fire["evidence"])
    # the prefix before the probe row decides nothing yet
    assert detect(batches.filter(pl.col("step") < probe_step), ep.head(3)).filter(pl.col("kind") == "co_pgd_probe").is_empty()
