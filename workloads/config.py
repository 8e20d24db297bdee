"""Typed trial configuration, the schema Hydra validates (`orchestrator/conf` holds the YAML defaults).

`TrialConfig` is plain data: Hydra composes it for the CLI, Ray Tune passes it to
its workers as a dict, and `validate` checks it before any work starts.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, NoReturn

from workloads.attacks import ATTACKS, MULTI_STEP, SINGLE_STEP, default_alpha, multi_step_alpha
from workloads.data import DATASETS
from workloads.errors import ConfigError
from workloads.methods import METHODS, get_method, read_fields
from workloads.methods.registry import MethodConfig
from workloads.models import MODELS
from workloads.run_dir import RunDir
from workloads.schedule import SCHEDULES, ScheduleConfig


@dataclass
class AttackConfig:
    name: str | None = None  # None: the method's own inner attack
    eps: float = 0.1
    alpha: float | None = None  # None: the attack's default relative to eps
    steps: int = 10  # PGD / TRADES inner steps
    noise: float = 2.0  # N-FGSM noise radius in units of eps


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None  # None: the dataset's default location
    subset: int | None = None  # use only this many training samples
    val_size: int = 1000
    probe_size: int = 512
    test_size: int = 1000
    augment: bool | None = None  # None: crop+flip for 32x32 sets, none for 28x28
    label_noise: float = 0.0  # share of training labels moved to another class (val, test clean): sharper RO


@dataclass
class ModelConfig:
    name: str = "small_cnn"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9  # sgd
    weight_decay: float = 5e-4
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam


@dataclass
class EvalConfig:
    pgd_steps: int = 10
    pgd_alpha: float | None = None  # None: max(eps/4, 2.5 eps / pgd_steps), as a multi-step attack.alpha
    restarts: int = 1
    batch_size: int = 512


@dataclass
class TelemetryConfig:
    flush_every: int = 100  # steps buffered on the device between Parquet files
    # Steps between natural-energy rows for methods whose attack starts off x (RS-FGSM, N-FGSM, PGD, PreJEAT,
    # JEAT): f(x) costs them an extra forward. None: sparse enough that it costs <= 0.5% of the steps (50
    # for single-step attacks, 10 for PGD-10, 5 for JEAT) but >= 10 rows an epoch; 1: every step.
    natural_every: int | None = None


@dataclass
class TrialConfig:
    method: MethodConfig = field(default_factory=MethodConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    epochs: int = 5
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast for the network; energies and losses stay fp32)
    channels_last: bool = False  # NHWC memory format for conv nets (with bf16 the fast path on CPU and GPU)
    compile: str | None = None  # torch.compile mode for the network; reduce-overhead adds CUDA graphs; None: eager
    threads: int | None = None  # torch CPU threads; None: torch's default
    out: str = "runs/default"  # sweep directory: tables, checkpoints and configs of every trial in it
    trial_id: str | None = None  # None: derived from the config, so re-running a command resumes it
    # where a re-run starts: last (last.pt), best (best.pt: the epochs after it again), scratch; logs follow
    resume: str = "last"


TRIAL_FIELDS = tuple(f.name for f in fields(TrialConfig))  # a config of a subclass (the runner's) has more
# keys that do not change what a trial computes
RUN_ONLY = ("out", "trial_id", "device", "threads", "resume")
PRECISIONS = ("fp32", "bf16")
RESUME = ("last", "best", "scratch")
OPTIMIZERS = ("sgd", "adam")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `<prog>: error: <message>` (exit 2), as every energy-at error."""

    def error(self, message: str) -> NoReturn:  # argparse would print the usage first
        self.exit(2, f"{self.prog}: error: {message}\n")


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_FRACTION = re.compile(rf"\s*({_NUMBER})\s*/\s*({_NUMBER})\s*")


def parse_fraction(field_name: str, text: str) -> float:
    """'8/255' -> 0.03137...; ConfigError naming the field for anything else ('8/0', 'a/b')."""
    m = _FRACTION.fullmatch(text)
    example = f"{field_name}=8/255 or {field_name}=0.0314"
    if not m:
        raise ConfigError(field_name, f"{text!r} is neither a number nor a fraction of two numbers; "
                          f"write e.g. {example}")
    num, den = float(m[1]), float(m[2])
    if den == 0:
        raise ConfigError(field_name, f"{text!r} divides by zero; write e.g. {example}")
    return num / den


def parse_number(field_name: str, text: str) -> float:
    """'0.0314' or '8/255' (as AT papers write eps) -> a float; ConfigError naming the field otherwise."""
    try:
        return float(text)
    except ValueError:
        return parse_fraction(field_name, text)


def unknown_key(key: str, allowed: Iterable[str]) -> ConfigError:
    """'attack.epsilon: unknown key; did you mean attack.eps? allowed: alpha, eps, ...'."""
    prefix, _, name = key.rpartition(".")
    allowed = sorted(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}? " if close else ""
    return ConfigError(key, f"unknown key; {hint}allowed: {', '.join(allowed)}")


def _is_list_field(owner: Any, name: Any) -> bool:
    if not (isinstance(owner, type) and is_dataclass(owner)) or not isinstance(name, str):
        return False
    return typing.get_origin(typing.get_type_hints(owner).get(name)) is list


def omegaconf_error(e: Exception) -> ConfigError:
    """An OmegaConf error (checking a value against the dataclasses) as one line naming the field and the fix:
    an unknown key gets the allowed keys and the nearest one, a single value given to a list field its
    bracket form (`tracking=[mlflow]`)."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    key = getattr(e, "full_key", None) or "config"
    owner, name, value = getattr(e, "object_type", None), getattr(e, "key", None), getattr(e, "value", None)
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and isinstance(owner, type) and is_dataclass(owner):
        return unknown_key(key, [f.name for f in fields(owner)])
    if isinstance(e, ValidationError) and _is_list_field(owner, name) and not isinstance(value, (list, tuple)):
        return ConfigError(key, f"a list; write {key}=[{value}]")
    msg = getattr(e, "msg", None) or str(e)
    return ConfigError(key, msg.splitlines()[0])


def from_dict(d: dict[str, Any], schema: type = TrialConfig) -> TrialConfig:
    """Build a TrialConfig (or `schema`, a subclass) from a nested dict (Hydra's composed config, Ray Tune's config).

    OmegaConf checks field names and types against the dataclasses; its errors
    become one-line ConfigErrors naming the field.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), d))  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise omegaconf_error(e) from None


def flatten(cfg: TrialConfig | dict, prefix: str = "") -> dict[str, Any]:
    """{"method.name": "fgsm", "attack.eps": 0.1, ...}: the form stored in config.json and ranked on."""
    d = asdict(cfg) if is_dataclass(cfg) else cfg
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Trial fields added after trial ids were in use, with their defaults: hashed only when set off them, so every
# earlier trial keeps its id, and read as them from an earlier trial's config.json
ADDED_LATER = {k: v for k, v in flatten(TrialConfig()).items() if k in ("data.label_noise",)}


def attack_alpha(cfg: TrialConfig) -> float:
    """The training attack's step size: `attack.alpha`, or the default of the attack the method runs."""
    attack = get_method(cfg.method.name).attack_name(cfg.method, cfg.attack.name)
    return cfg.attack.alpha or default_alpha(attack, cfg.attack.eps, cfg.attack.steps)


def eval_alpha(cfg: TrialConfig) -> float:
    """The per-epoch evaluation's PGD step size: `eval.pgd_alpha`, or the multi-step default."""
    return cfg.eval.pgd_alpha or multi_step_alpha(cfg.attack.eps, cfg.eval.pgd_steps)


def _moved_alphas(cfg: TrialConfig, flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` with the empty step sizes whose default moved written out.

    Multi-step attacks and the evaluation's PGD stepped eps/4 by default; now max(eps/4, 2.5 eps/k), the
    same below 10 steps only. A step size that moved is hashed as its value, so exactly the trials that
    compute something else get new ids; the others hash `null` as before.
    """
    old = cfg.attack.eps / 4
    method = get_method(cfg.method.name)
    multi_step = method.adversarial and method.attack_name(cfg.method, cfg.attack.name) in MULTI_STEP
    moved = dict(flat)
    if cfg.attack.alpha is None and multi_step and attack_alpha(cfg) != old:
        moved["attack.alpha"] = attack_alpha(cfg)
    if cfg.eval.pgd_alpha is None and eval_alpha(cfg) != old:
        moved["eval.pgd_alpha"] = eval_alpha(cfg)
    return moved


def _hashed_id(cfg: TrialConfig, flat: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.method.name}-s{cfg.seed}-{digest}"


def legacy_trial_id(cfg: TrialConfig) -> str:
    """The id earlier versions gave `cfg`: a hash over every field but RUN_ONLY, read or not (and, as in
    `trial_id`, the step sizes whose default moved)."""
    return _hashed_id(cfg, _moved_alphas(cfg, _hashable(cfg)))


def _hashable(cfg: TrialConfig) -> dict[str, Any]:
    """The flattened trial fields but RUN_ONLY (a subclass's own fields, the runner's, are not the trial's)."""
    return {k: v for k, v in flatten(cfg).items() if k.split(".")[0] in TRIAL_FIELDS and k not in RUN_ONLY
            and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def trial_id(cfg: TrialConfig) -> str:
    """`cfg.trial_id`, or `<method>-s<seed>-<hash of the fields the trial reads>` (so a re-run resumes).

    The hash leaves out RUN_ONLY and the `method.*` / `attack.*` fields that the method and its attack
    never read (`workloads.methods.read_fields`): `method=fgsm method.beta=1` is the trial `method=fgsm`.
    An empty `attack.alpha` / `eval.pgd_alpha` whose default moved is hashed as its value (`_moved_alphas`).
    A trial that an earlier version wrote under `cfg.out` (`legacy_trial_id`, same config) keeps its id,
    so re-running an old command resumes it.
    """
    if cfg.trial_id:
        return cfg.trial_id
    hashed = _moved_alphas(cfg, _hashable(cfg))
    new = _hashed_id(cfg, read_fields(hashed))
    run_dir, old = RunDir(cfg.out), legacy_trial_id(cfg)
    started = lambda tid: run_dir.trial(tid).is_dir() or run_dir.checkpoints(tid).is_dir()  # noqa: E731
    return old if not started(new) and started(old) else new


def check_sizes(data: DataConfig, sizes: tuple[int, int]) -> None:
    """ConfigError for a split larger than the dataset's (training, test) images `sizes`."""
    n_train, n_test = sizes
    if data.val_size >= n_train:
        raise ConfigError("data.val_size", f"must be less than the {n_train} training images of {data.name}, "
                          f"got {data.val_size}")
    train, why = n_train - data.val_size, f"of {data.name} left after data.val_size={data.val_size}"
    if data.subset is not None and data.subset > train:
        raise ConfigError("data.subset", f"{data.subset} is more than the {train} training images {why}; "
                          f"pass data.subset={train} or less")
    if data.subset is not None:
        train, why = data.subset, "(data.subset)"
    if data.probe_size > train:  # the probe samples the training images
        raise ConfigError("data.probe_size", f"{data.probe_size} is more than the {train} training images {why}; "
                          f"pass data.probe_size={train} or less")
    if data.test_size > n_test:
        raise ConfigError("data.test_size", f"{data.test_size} is more than the {n_test} test images of "
                          f"{data.name}; pass data.test_size={n_test} or less")


def validate(cfg: TrialConfig) -> None:
    """Raise ConfigError for the first bad value, before any work starts."""
    def choice(name: str, value: Any, allowed) -> None:
        if value not in allowed:
            raise ConfigError(name, f"unknown value {value!r}; allowed: {', '.join(sorted(allowed))}")

    def positive(name: str, value: Any, integer: bool = False, zero: bool = False) -> None:
        kind = int if integer else (int, float)
        ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not zero):
            what = "integer" if integer else "number"
            raise ConfigError(name, f"must be a {'non-negative' if zero else 'positive'} {what}, got {value!r}")

    choice("method.name", cfg.method.name, METHODS)
    if cfg.trial_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", cfg.trial_id):
        raise ConfigError("trial_id", f"{cfg.trial_id!r} is a folder name under every table: use letters, "
                          "digits and . _ + - (no '/', '=' or spaces)")
    choice("data.name", cfg.data.name, DATASETS)
    choice("model.name", cfg.model.name, MODELS)
    choice("schedule.name", cfg.schedule.name, SCHEDULES)
    choice("optim.name", cfg.optim.name, OPTIMIZERS)
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError("optim.betas", f"must be two numbers in [0,1), got {cfg.optim.betas}")
    if cfg.attack.name is not None:
        choice("attack.name", cfg.attack.name, ATTACKS)
    if cfg.method.name == "der":
        choice("method.base", cfg.method.base, (*SINGLE_STEP, "pgd"))
    positive("attack.eps", cfg.attack.eps, zero=cfg.method.name == "erm")
    if cfg.attack.eps > 1:
        raise ConfigError("attack.eps", f"must be at most 1 (inputs are in [0,1]), got {cfg.attack.eps}")
    if cfg.attack.alpha is not None:
        positive("attack.alpha", cfg.attack.alpha)
    for name in ("attack.steps", "epochs", "batch_size", "eval.pgd_steps", "eval.restarts", "eval.batch_size",
                 "telemetry.flush_every", "data.val_size", "data.probe_size", "data.test_size",
                 "method.sgld_steps", "method.buffer_size"):
        section, _, key = name.rpartition(".")
        positive(name, getattr(getattr(cfg, section) if section else cfg, key), integer=True)
    for name in ("optim.lr", "method.sgld_step_size"):
        section, key = name.split(".")
        positive(name, getattr(getattr(cfg, section), key))
    for name in ("method.beta", "method.gamma", "optim.weight_decay", "optim.momentum", "method.sgld_noise",
                 "attack.noise", "schedule.factor"):
        section, key = name.split(".")
        positive(name, getattr(getattr(cfg, section), key), zero=True)
    if not 0 <= cfg.optim.momentum < 1:
        raise ConfigError("optim.momentum", f"must be in [0,1) (0.9 is usual), got {cfg.optim.momentum}")
    if cfg.threads is not None:
        positive("threads", cfg.threads, integer=True)
    positive("seed", cfg.seed, integer=True, zero=True)
    if cfg.eval.pgd_alpha is not None:
        positive("eval.pgd_alpha", cfg.eval.pgd_alpha)
    for name in ("peak", "pct_start"):  # cyclic and onecycle divide by it and by 1 - it
        value = getattr(cfg.schedule, name)
        if not 0 < value < 1:
            raise ConfigError(f"schedule.{name}", f"must be a fraction of training in (0,1), got {value}")
    ms = cfg.schedule.milestones
    if isinstance(ms, str) or not isinstance(ms, Sequence) or not all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in ms):
        raise ConfigError("schedule.milestones", f"must be a list of fractions of training in (0,1) (the "
                          f"decay at epoch 100 of 200 is 0.5), got {ms!r}")
    if not 0 <= cfg.data.label_noise < 1:
        raise ConfigError("data.label_noise", f"must be a share of the training labels in [0,1) (0.2 moves one "
                          f"in five to another class), got {cfg.data.label_noise}")
    if not 0 <= cfg.method.reinit <= 1:
        raise ConfigError("method.reinit", f"must be a probability in [0,1], got {cfg.method.reinit}")
    for name in ("data.subset", "telemetry.natural_every"):
        section, key = name.split(".")
        if getattr(getattr(cfg, section), key) is not None:
            positive(name, getattr(getattr(cfg, section), key), integer=True)
    check_sizes(cfg.data, DATASETS[cfg.data.name].sizes)
    if cfg.data.root is not None and not os.path.isdir(os.path.expanduser(cfg.data.root)):
        raise ConfigError("data.root", f"no such directory {cfg.data.root!r}; pass the folder holding the "
                          f"{cfg.data.name} files")
    choice("precision", cfg.precision, PRECISIONS)
    choice("resume", cfg.resume, RESUME)
    if cfg.compile is not None:
        choice("compile", cfg.compile, COMPILE_MODES)
        if cfg.compile in CUDA_GRAPH_MODES and cfg.device == "cpu":
            raise ConfigError("compile", f"{cfg.compile!r} records CUDA graphs and needs device=cuda; on CPU use "
                              "compile=default or leave compile unset")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError("device", f"unknown device {cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
