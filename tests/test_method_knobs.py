"""A trial's id and its ranking hold only the `method.*` / `attack.*` fields its method and attack read.

The declarations (`knobs=` in workloads/methods/catalog.py, `ATTACK_KNOBS` in workloads/attacks) are
checked against the code: changing a field a method does not declare leaves two real training steps
bit for bit the same, and changing one it declares changes them.
"""
from __future__ import annotations

import copy
import json

import polars as pl
import pytest
import torch

from analysis.rank import rank, trial_metrics, unread_as_null
from workloads.config import AttackConfig, MethodConfig, TrialConfig, flatten, legacy_trial_id, trial_id
from workloads.data import batches, load_dataset
from workloads.methods import METHODS, read_fields
from workloads.trial import Trial


def cfg(method: str, out: str = "runs/none", **fields) -> TrialConfig:
    """A TrialConfig with `method` and `section__field=value` (or top-level `field=value`) overrides, no Hydra."""
    c = TrialConfig(method=MethodConfig(method), attack=AttackConfig(), out=out)
    for key, value in fields.items():
        section, _, name = key.rpartition("__")
        setattr(getattr(c, section) if section else c, name, value)
    return c


@pytest.mark.parametrize("a, b, same", [
    (dict(method__beta=1.0), {}, True),  # FGSM reads no beta
    (dict(method__sgld_steps=5, method__reinit=0.5), {}, True),
    (dict(attack__steps=3), {}, True),  # single-step
    (dict(attack__noise=1.0), {}, True),  # only N-FGSM reads the noise radius
    (dict(attack__name="fgsm"), {}, True),  # its own attack, named
    (dict(attack__alpha=0.05), {}, False),
    (dict(attack__eps=0.2), {}, False),
    (dict(attack__name="pgd"), {}, False),
    (dict(attack__name="pgd", attack__steps=3), dict(attack__name="pgd"), False),  # PGD reads steps
    (dict(optim__lr=0.1), {}, False),
])
def test_fgsm_id_ignores_fields_it_does_not_read(tmp_path, a, b, same):
    ids = trial_id(cfg("fgsm", str(tmp_path), **a)), trial_id(cfg("fgsm", str(tmp_path), **b))
    assert (ids[0] == ids[1]) is same, ids


@pytest.mark.parametrize("method, a, b, same", [
    ("trades", dict(method__beta=1.0), dict(method__beta=6.0), False),
    ("trades", dict(attack__steps=3), {}, False),
    ("trades", dict(method__gamma=1.0, method__base="pgd"), {}, True),
    ("pgd", dict(attack__name="pgd"), {}, True),
    ("n_fgsm", dict(attack__noise=1.0), {}, False),
    ("rs_fgsm", dict(attack__noise=1.0), {}, True),
    ("der", dict(method__base="pgd"), {}, False),
    ("der", dict(attack__steps=3), {}, True),  # rs_fgsm base
    ("der", dict(method__base="pgd", attack__steps=3), dict(method__base="pgd"), False),
    ("der", dict(attack__name="rs_fgsm"), {}, True),  # its default base, named
    ("jeat", dict(method__buffer_size=64), {}, False),
    ("jeat", dict(method__beta=1.0, attack__steps=3), {}, True),
    ("erm", dict(attack__name="pgd", attack__alpha=0.01, attack__steps=3, method__base="fgsm"), {}, True),
    ("erm", dict(attack__eps=0.2), {}, False),  # the evaluation radius
])
def test_id_by_method(tmp_path, method, a, b, same):
    ids = trial_id(cfg(method, str(tmp_path), **a)), trial_id(cfg(method, str(tmp_path), **b))
    assert (ids[0] == ids[1]) is same, ids


def test_a_trial_of_an_earlier_version_keeps_its_id(tmp_path):
    c = cfg("fgsm", str(tmp_path), method__beta=1.0)
    new, old = trial_id(c), legacy_trial_id(c)
    assert new != old and old != legacy_trial_id(cfg("fgsm", str(tmp_path)))  # the old hash read every field
    (tmp_path / "checkpoints" / f"trial={old}").mkdir(parents=True)  # an earlier version trained it here
    assert trial_id(c) == old
    assert trial_id(cfg("fgsm", str(tmp_path))) == new  # not the same config as that old trial
    (tmp_path / "trials" / f"trial={new}").mkdir(parents=True)  # once the new id exists it wins
    assert trial_id(c) == new


def test_a_field_added_later_moves_no_id_at_its_default(tmp_path):
    # fgsm-s0-0f7e010ca8: the default trial's id before data.label_noise existed (e9ae9d6), as in runs/fgsm-co
    assert trial_id(cfg("fgsm", str(tmp_path))) == "fgsm-s0-0f7e010ca8"
    assert trial_id(cfg("fgsm", str(tmp_path), data__label_noise=0.2)) != "fgsm-s0-0f7e010ca8"


def test_every_field_a_method_does_not_declare_is_dropped_from_its_id():
    for name, m in METHODS.items():
        view = read_fields(flatten(cfg(name)))
        method_fields = {k.split(".", 1)[1] for k in view if k.startswith("method.")}
        assert method_fields == {"name", *m.knobs}, name
        assert "attack.eps" in view and ("attack.alpha" in view) is m.adversarial, name


# --- the declarations against the code: two real training steps ------------------------------------------
PERTURB = {  # field -> a value different from the base config's
    "method.beta": 2.0, "method.gamma": 0.3, "method.base": "pgd", "method.sgld_steps": 3,
    "method.sgld_step_size": 0.5, "method.sgld_noise": 0.1, "method.buffer_size": 32, "method.reinit": 0.9,
    "attack.alpha": 0.03, "attack.steps": 3, "attack.noise": 1.0,
}
CASES = [(m, {}) for m in sorted(METHODS)] + [
    ("der", {"method.base": "pgd"}),  # regularises every sample
    ("fgsm", {"attack.name": "pgd"}),  # an attack override brings its own fields
    ("der", {"attack.name": "n_fgsm"}),
]


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion_mnist", subset=64, val_size=32, probe_size=16, test_size=32, seed=0)


def two_steps(c: TrialConfig, data) -> tuple[list[float], torch.Tensor]:
    trial = Trial(c, data=data)
    losses = []
    for x, y, _ in batches(data.train, 16, shuffle=False):
        losses.append(trial.optimise(x, y, 0.05).terms.loss.item())
        if len(losses) == 2:
            break
    return losses, torch.cat([p.detach().flatten() for p in trial.model.parameters()])


@pytest.mark.parametrize("method, extra", CASES, ids=[f"{m}{'+' if e else ''}{json.dumps(e) if e else ''}"
                                                      for m, e in CASES])
def test_declared_fields_are_exactly_those_a_training_step_reads(tmp_path, data, method, extra):
    base = cfg(method, str(tmp_path), method__sgld_steps=2, method__buffer_size=64, attack__steps=2,
               attack__eps=0.1, trial_id="t", threads=1, device="cpu")
    if method == "der":
        base.method.beta = 1.0
    for key, value in extra.items():
        section, name = key.split(".")
        setattr(getattr(base, section), name, value)
    ref = two_steps(base, data)
    declared = read_fields(flatten(base))
    # single-step DER regularises abnormal adversarial examples only, and a fresh model has none yet
    inert = {"method.beta", "method.gamma"} if method == "der" and base.method.base != "pgd" else set()
    wrong = []
    for key, value in PERTURB.items():
        if key in extra:
            continue
        c = copy.deepcopy(base)
        section, name = key.split(".")
        setattr(getattr(c, section), name, value)
        losses, params = two_steps(c, data)
        changed = losses != ref[0] or not torch.equal(params, ref[1])
        if changed != (key in declared) and not (key in inert and not changed):
            wrong.append(f"{key} {'changes' if changed else 'does not change'} the steps")
    knobs = sorted(k for k in declared if k.startswith(("method.", "attack.")))
    assert not wrong, f"{method} {extra}: declared {knobs}; " + "; ".join(wrong)


def test_rerunning_a_trial_an_earlier_version_trained_resumes_it(tmp_path, data):
    c = cfg("trades", str(tmp_path), epochs=1, batch_size=32, attack__steps=2, eval__pgd_steps=2, threads=1,
            device="cpu")
    old = legacy_trial_id(c)
    earlier = copy.deepcopy(c)
    earlier.trial_id = old  # what the earlier version named it
    assert Trial(earlier, data=data).run()["status"] == "finished"
    again = Trial(c, data=data)
    assert again.id == old and again.resumed and again.epoch == 1


# --- the ranking -----------------------------------------------------------------------------------------
def test_ranking_groups_and_shows_only_fields_the_method_reads():
    rows = [
        # two FGSM trials that differ only in a beta FGSM never reads: one configuration
        {"trial": "f0", "method.name": "fgsm", "method.beta": 6.0, "attack.steps": 10, "seed": 0},
        {"trial": "f1", "method.name": "fgsm", "method.beta": 1.0, "attack.steps": 3, "seed": 1},
        {"trial": "t0", "method.name": "trades", "method.beta": 1.0, "attack.steps": 10, "seed": 0},
        {"trial": "t1", "method.name": "trades", "method.beta": 6.0, "attack.steps": 10, "seed": 0},
    ]
    trials = pl.DataFrame([r | {"sweep": "s", "status": "finished", "has_config": True, "attack.eps": 0.1,
                                "method.sgld_steps": 20} for r in rows])
    epochs = pl.DataFrame([{"trial": r["trial"], "epoch": 0, "split": "val", "acc_pgd": 0.3, "acc_nat": 0.6}
                           for r in rows], schema_overrides={"epoch": pl.Int32})
    shown = unread_as_null(trials)
    assert "method.sgld_steps" not in shown.columns  # no trial reads it
    assert shown.filter(pl.col("method.name") == "fgsm")["method.beta"].is_null().all()
    table = rank(trial_metrics(epochs), trials)
    assert table.height == 3
    fgsm = table.filter(pl.col("method.name") == "fgsm").row(0, named=True)
    assert fgsm["n"] == 2 and fgsm["method.beta"] is None and fgsm["attack.steps"] is None
    assert sorted(table.filter(pl.col("method.name") == "trades")["method.beta"].to_list()) == [1.0, 6.0]


def test_a_sweep_runs_grid_points_that_compute_the_same_trial_once(tmp_path, capsys):
    from orchestrator.sweep import SweepPlan

    plan = SweepPlan.from_overrides(["sweep=smoke", "method=fgsm,trades", "method.beta=1,6", f"sweep.out={tmp_path}"])
    assert sorted(t.method.name for t in plan.trials) == ["fgsm", "trades", "trades"]
    assert "1 of 4 grid points repeat" in capsys.readouterr().err
    assert len(plan.legacy) == 4  # a Tune experiment of an earlier version named all four
