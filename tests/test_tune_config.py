"""Tune knows the hyperparameters: each Tune trial's config holds the keys that vary across the sweep.

`SweepPlan.param_space` is a grid over trial ids plus, per varying key, its value for that trial; the
trainable still runs the validated TrialConfig it looks up by id. One tiny real sweep checks what Tune
shows of it: the ResultGrid (through the project's own `Tuner.restore`), params.json, TensorBoard's
HParams and the console's trial table.
"""
import json
import struct
import subprocess
import sys

import pytest
from orchestrator.sweep import SweepPlan
from workloads.config import flatten

SMOKE = ["sweep=smoke", "epochs=1", "optim.lr=interval(0.01,0.02)", "sweep.report=false"]  # 2 trials


def resolved_configs(plan: SweepPlan) -> list[dict]:
    """The trial configs Ray Tune's variant generator makes of the plan's param_space."""
    from ray.tune.search.variant_generator import generate_variants

    return [spec["config"] for _, spec in generate_variants({"config": plan.param_space()})]


def test_param_space_holds_the_varying_keys_of_each_trial_and_nulls_unread_ones(tmp_path):
    plan = SweepPlan.from_overrides(["sweep=smoke", "method=fgsm,trades", "method.beta=1,6", "attack.eps=0.2",
                                     f"sweep.out={tmp_path}"])
    configs = resolved_configs(plan)
    assert [c["trial"] for c in configs] == [t.trial_id for t in plan.trials]
    by_id = {c["trial"]: c for c in configs}
    for t in plan.trials:
        c = by_id[t.trial_id]
        assert set(c) == {"trial", "method.name", "method.beta", "attack.steps"}  # eps, seed, ... do not vary
        assert c["method.name"] == t.method.name
        # FGSM reads neither beta nor steps (the ranking shows them null too); TRADES reads both
        assert (c["method.beta"], c["attack.steps"]) == \
            ((None, None) if t.method.name == "fgsm" else (t.method.beta, t.attack.steps))
    assert sorted(c["method.beta"] for c in configs if c["method.name"] == "trades") == [1.0, 6.0]

    one = SweepPlan.from_overrides(["sweep=smoke", "method=fgsm", f"sweep.out={tmp_path / 'one'}"])
    assert resolved_configs(one) == [{"trial": one.trials[0].trial_id}]  # nothing varies


def hparams(events) -> dict:
    """The HParams (session start info) that Tune's TensorBoard logger wrote into an events file."""
    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    data, found = events.read_bytes(), {}
    while data:
        (n,) = struct.unpack("<Q", data[:8])
        record, data = data[12:12 + n], data[16 + n:]  # length, its crc, the record, its crc
        for v in event_pb2.Event.FromString(record).summary.value:
            if v.tag == "_hparams_/session_start_info":
                info = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                found |= {k: getattr(x, x.WhichOneof("kind")) for k, x in info.session_start_info.hparams.items()}
    return found


@pytest.mark.slow
def test_a_sweeps_tune_results_show_each_trials_hyperparameters(tmp_path):
    args = [*SMOKE, f"sweep.out={tmp_path}"]
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", *args], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    plan = SweepPlan.from_overrides(args)
    expected = {t.trial_id: {"trial": t.trial_id, "method.name": t.method.name, "optim.lr": t.optim.lr}
                for t in plan.trials}
    assert {c["method.name"] for c in expected.values()} == {"fgsm", "rs_fgsm"}
    assert len({c["optim.lr"] for c in expected.values()}) == 2

    grid = plan.tuner().get_results()  # the sweep's own path: Tuner.restore of <out>/tune/<out's name>
    assert grid.num_errors == 0 and len(grid) == 2
    frame = grid.get_dataframe()
    got = {row["config/trial"]: {"trial": row["config/trial"], "method.name": row["config/method.name"],
                                 "optim.lr": row["config/optim.lr"]} for _, row in frame.iterrows()}
    assert got == expected
    assert not [c for c in frame.columns if c.startswith("config/") and c not in
                ("config/trial", "config/method.name", "config/optim.lr")]  # only what varies
    best = grid.get_best_result("val_acc_pgd", "max")
    assert best.config == expected[best.config["trial"]]

    for tid, config in expected.items():
        trial_dir = tmp_path / "tune" / tmp_path.name / tid
        assert json.loads((trial_dir / "params.json").read_text()) == config
        assert hparams(next(trial_dir.glob("events.out.tfevents.*"))) == config
        ran = json.loads((tmp_path / "trials" / f"trial={tid}" / "config.json").read_text())
        assert {k: ran[k] for k in config if k != "trial"} == {k: v for k, v in config.items() if k != "trial"}
        planned = flatten(next(t for t in plan.trials if t.trial_id == tid))
        assert {k: ran[k] for k in planned} == planned  # the validated TrialConfig, looked up by id, is what ran
        assert ran["stop_on"] == list(plan.settings.stop_on) and ran["tracking"] == []  # run as the sweep said

    header = next(line for line in r.stdout.splitlines() if "Trial name" in line and "status" in line)
    assert "method.name" in header and "optim.lr" in header  # the console's trial table
