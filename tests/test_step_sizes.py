"""Multi-step attacks' default step lets k steps reach eps, max(eps/4, 2.5 eps/k); trial ids change exactly
where a trial's step size changed (below 10 steps), and nowhere else."""
from __future__ import annotations

import copy
import itertools

import pytest

from workloads.attacks import ATTACKS, MULTI_STEP, SINGLE_STEP, default_alpha
from workloads.config import (AttackConfig, EvalConfig, MethodConfig, TrialConfig, _hashable, _hashed_id, eval_alpha,
                              legacy_trial_id, trial_id)
from workloads.data import load_dataset
from workloads.methods import read_fields
from workloads.trial import Trial

EPS = 0.1


def cfg(method: str, out: str, steps: int = 10, eval_steps: int = 10, **method_fields) -> TrialConfig:
    return TrialConfig(method=MethodConfig(method, **method_fields), attack=AttackConfig(eps=EPS, steps=steps),
                       eval=EvalConfig(pgd_steps=eval_steps), out=out, device="cpu", threads=1)


def unresolved_id(c: TrialConfig) -> str:
    """The id as trial_id computed it before the new default: the hash of the fields as given (null steps)."""
    return _hashed_id(c, read_fields(_hashable(c)))


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion_mnist", subset=64, val_size=32, probe_size=16, test_size=32, seed=0)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_k_default_steps_reach_the_ball(attack):
    for k in range(1, 31):
        alpha = default_alpha(attack, EPS, k)
        if attack in MULTI_STEP:
            assert k * alpha >= EPS - 1e-12 and alpha == max(EPS / 4, 2.5 * EPS / k)
            assert alpha == EPS / 4 if k >= 10 else alpha > EPS / 4  # 10 steps on: eps/4 bit for bit
        else:
            assert attack in SINGLE_STEP and alpha == default_alpha(attack, EPS, 1)  # steps are not theirs


def test_a_pgd3_trial_steps_2_5_eps_over_3(tmp_path, data):
    for method in ("pgd", "trades", "mart"):
        trial = Trial(cfg(method, str(tmp_path), steps=3, eval_steps=3), data=data)
        assert trial.alpha == pytest.approx(2.5 * EPS / 3) and eval_alpha(trial.cfg) == pytest.approx(2.5 * EPS / 3)
    assert Trial(cfg("pgd", str(tmp_path)), data=data).alpha == EPS / 4  # PGD-10: as before


def test_ids_change_exactly_where_the_step_size_changed(tmp_path, data):
    """Before the new default an empty step size meant eps/4 for every multi-step attack and for the
    evaluation's PGD, and the id hashed it as null: the ids that stay are those whose steps stayed."""
    methods = [("pgd", {}), ("trades", {}), ("mart", {}), ("rs_fgsm", {}), ("der", {"base": "pgd"}), ("erm", {})]
    for (method, fields), steps, eval_steps in itertools.product(methods, (3, 9, 10, 20), (3, 10)):
        c = cfg(method, str(tmp_path), steps, eval_steps, **fields)
        trial = Trial(c, data=data)
        moved = (trial.attack in MULTI_STEP and trial.method.adversarial and trial.alpha != EPS / 4) \
            or eval_alpha(c) != EPS / 4
        assert (trial_id(c) != unresolved_id(c)) is moved, (method, steps, eval_steps)
        assert moved is ((steps < 10 and method in ("pgd", "trades", "mart", "der")) or eval_steps < 10)


def test_pgd3_with_its_default_is_pgd3_with_that_step_written_out(tmp_path):
    default = cfg("pgd", str(tmp_path), steps=3)
    explicit = copy.deepcopy(default)
    explicit.attack.alpha = default_alpha("pgd", EPS, 3)
    old_step = copy.deepcopy(default)
    old_step.attack.alpha = EPS / 4
    assert trial_id(default) == trial_id(explicit) != trial_id(old_step)
    assert trial_id(default) != unresolved_id(default)  # the id PGD-3 had with eps/4


def test_an_earlier_pgd3_trial_is_not_resumed_but_an_earlier_pgd10_is(tmp_path):
    for steps, resumed in ((3, False), (10, True)):
        c = cfg("pgd", str(tmp_path), steps=steps)
        earlier = _hashed_id(c, _hashable(c))  # every field that version had, as given
        (tmp_path / "checkpoints" / f"trial={earlier}").mkdir(parents=True)
        assert (trial_id(c) == earlier) is resumed and (legacy_trial_id(c) == earlier) is resumed
