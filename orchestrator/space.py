"""A sweep's search space in Hydra's override syntax, expanded into one override list per trial.

    method=fgsm,rs_fgsm          grid axis (choice)
    seed=range(3)                grid axis (range)
    optim.lr=tag(log,interval(0.01,0.2))   random axis: drawn `num_samples` times per grid point
    attack.eps=0.25              fixed value

The same syntax as `energy-at train -m`. Random draws use a seeded generator, so
the trials validated before a sweep starts are exactly the trials that run.

`axes` splits the same overrides for a search algorithm (`sweep.search=optuna`): the grid axes
become categorical choices and the interval axes ranges it samples (`SearchPlan`, sweep.py).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import OverrideParseException

from workloads.config import ConfigError


def parse(overrides: list[str]) -> list[Override]:
    """Parse overrides; a later override of the same key replaces an earlier one (preset, then command line)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError("override", str(e).splitlines()[0]) from None
    by_key: dict[str, Override] = {}
    for o in parsed:
        if o.is_sweep_override() and not isinstance(o.value(), IntervalSweep) and not list(o.sweep_string_iterator()):
            value = (o.input_line or "").partition("=")[2]
            raise ConfigError(o.get_key_element(), f"{value} has no values, so no trial would run; give "
                              f"it at least one, e.g. {o.get_key_element()}=range(0,3)")
        by_key.pop(o.get_key_element(), None)
        by_key[o.get_key_element()] = o
    return list(by_key.values())


def bounds(sweep: IntervalSweep, key: str = "interval") -> tuple[float, float]:
    """An interval's (low, high), or a ConfigError naming `key` if it is empty or a log range reaches 0."""
    lo, hi = float(sweep.start), float(sweep.end)
    if lo > hi:
        raise ConfigError(key, f"interval({sweep.start}, {sweep.end}) is empty: write the lower bound first")
    if "log" in sweep.tags and lo <= 0:
        raise ConfigError(key, f"tag(log, interval({sweep.start}, {sweep.end})) needs bounds > 0; drop `log` "
                          "or raise the lower bound")
    return lo, hi


def is_integer(sweep: IntervalSweep) -> bool:
    return isinstance(sweep.start, int) and isinstance(sweep.end, int)


def _draw(sweep: IntervalSweep, rng: random.Random, key: str = "interval") -> str:
    lo, hi = bounds(sweep, key)
    if "log" in sweep.tags:
        return repr(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if is_integer(sweep):
        return str(rng.randint(sweep.start, sweep.end))
    return repr(rng.uniform(lo, hi))


def expand(overrides: list[str], num_samples: int = 1, seed: int = 0) -> list[list[str]]:
    """One list of plain `key=value` overrides per trial: grid product x `num_samples` random draws."""
    parsed = parse(overrides)
    fixed = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed if not o.is_sweep_override()]
    grid = [o for o in parsed if o.is_sweep_override() and not isinstance(o.value(), IntervalSweep)]
    randoms = [o for o in parsed if isinstance(o.value(), IntervalSweep)]
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in grid]
    rng = random.Random(seed)
    trials = []
    for point in itertools.product(*axes):
        for _ in range(num_samples if randoms else 1):
            drawn = [f"{o.get_key_element()}={_draw(o.value(), rng, o.get_key_element())}" for o in randoms]
            trials.append([*fixed, *point, *drawn])
    return trials


@dataclass
class Axes:
    """Overrides split for a search algorithm: fixed values, categorical axes, sampled ranges."""
    fixed: list[str]  # key=value
    choices: dict[str, list[str]]  # key -> its values (comma lists, range(...)), as override strings
    intervals: dict[str, IntervalSweep]  # key -> interval(...) or tag(log, interval(...))

    def combinations(self) -> list[dict[str, str]]:
        """Every combination of the categorical values ({} when there are none)."""
        keys = list(self.choices)
        return [dict(zip(keys, values)) for values in itertools.product(*self.choices.values())]


def axes(overrides: list[str]) -> Axes:
    parsed = parse(overrides)
    intervals = {o.get_key_element(): o.value() for o in parsed if isinstance(o.value(), IntervalSweep)}
    for key, sweep in intervals.items():
        bounds(sweep, key)
    return Axes(
        fixed=[f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed if not o.is_sweep_override()],
        choices={o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed
                 if o.is_sweep_override() and not isinstance(o.value(), IntervalSweep)},
        intervals=intervals)
