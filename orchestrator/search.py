"""`SearchPlan`: the space a Ray Tune search algorithm samples (`sweep.search=optuna`).

    method=fgsm,n_fgsm                      categorical: tune.choice
    attack.eps=interval(0.15,0.35)          sampled: tune.uniform
    optim.lr=tag(log,interval(0.01,0.2))    sampled: tune.loguniform (integer bounds: tune.randint)

The search algorithm picks each trial's values while the sweep runs, so the trials cannot all be
planned up front as a grid's are. What is validated before anything runs instead: one trial config
per combination of the categorical values (Hydra composes config groups such as `method=` only
here, on the driver), each with every sampled axis at its low and at its high end. A trial then
sets the sampled values, plain numbers, on the validated config of its categorical values.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Callable

from orchestrator.space import Axes, bounds, is_integer
from workloads.config import TrialConfig, trial_id

SEARCHES = ("grid", "optuna")  # grid: the plan's trials, expanded up front (orchestrator/space.py)
MAX_COMBINATIONS = 512  # categorical combinations composed and validated before a search starts


class SearchPlan:
    """Tune's param_space for a search algorithm, and each suggested trial's config."""

    def __init__(self, axes: Axes, bases: dict[str, dict]):
        self.axes = axes
        self.bases = bases  # categorical values (json) -> the validated TrialConfig as a dict, sampled axes at low

    @classmethod
    def validated(cls, axes: Axes, compose: Callable[[list[str]], TrialConfig]) -> "SearchPlan":
        """Compose `axes.fixed` + each categorical combination (+ every sampled axis at its low end) with
        `compose` (overrides -> a validated TrialConfig); check the high ends too. ConfigErrors propagate."""
        from workloads.config import ConfigError

        combos = axes.combinations()
        if len(combos) > MAX_COMBINATIONS:
            raise ConfigError("sweep.search", f"{len(combos)} combinations of categorical values (at most "
                              f"{MAX_COMBINATIONS} are validated up front): sample numeric axes with interval(...)")
        low, high = ({k: (s.start, s.end)[i] if is_integer(s) else bounds(s, k)[i] for k, s in axes.intervals.items()}
                     for i in (0, 1))
        plan = cls(axes, {})
        for combo in combos:
            base = compose([*axes.fixed, *(f"{k}={v}" for k, v in combo.items()),
                            *(f"{k}={v!r}" for k, v in low.items())])
            plan.bases[_key(combo)] = asdict(base)
            plan.config(combo | high)  # the high ends validate too
        return plan

    def param_space(self) -> dict:
        from ray import tune

        space: dict = {k: tune.choice(v) for k, v in self.axes.choices.items()}
        for key, s in self.axes.intervals.items():
            lo, hi = bounds(s, key)
            if is_integer(s):
                space[key] = tune.randint(s.start, s.end + 1)  # upper bound exclusive; interval(...) includes it
            elif "log" in s.tags:
                space[key] = tune.loguniform(lo, hi)
            else:
                space[key] = tune.uniform(lo, hi)
        return space

    def config(self, suggested: dict) -> TrialConfig:
        """The validated TrialConfig of a suggestion ({key: value} for every axis), its id set."""
        from orchestrator.config import validated

        d = copy.deepcopy(self.bases[_key({k: suggested[k] for k in self.axes.choices})])
        for key in self.axes.intervals:
            *path, leaf = key.split(".")
            node = d
            for part in path:
                node = node[part]
            node[leaf] = suggested[key]
        d["trial_id"] = None
        cfg = validated(d)
        cfg.trial_id = trial_id(cfg)
        return cfg

    def max_epochs(self) -> int:
        return max(b["epochs"] for b in self.bases.values())


def _key(combo: dict[str, str]) -> str:
    return json.dumps([combo[k] for k in sorted(combo)])
