"""Composing and validating trial configs from Hydra overrides, before any work starts.

Besides composing (`compose_config`, `compose_trial`) this module holds what `energy-at train`
and `energy-at sweep` share of Hydra's command line:

- Hydra's own flags (`HydraFlags.parse`): `--cfg job|hydra|all` (with `--resolve`, `--package`),
  `--info [...]`, `--help`, `--config-dir DIR`, `-m`;
- user config directories (`--config-dir DIR`, `hydra.searchpath=[file://DIR]`): they go onto
  Hydra's config search path (`search_path`), behind `orchestrator/conf`, so a user's
  `DIR/method/mine.yaml` is selectable as `method=mine` in every composition of the command;
- fractions for the step sizes (`with_fractions`): `attack.eps=8/255`, as AT papers write eps.
"""
from __future__ import annotations

import contextlib
import logging
import os
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, flag_override
from omegaconf.errors import OmegaConfBaseException

from analysis.detectors import DetectorSettings, settings_problem
from orchestrator.tracking.trackers import check_trackers
from workloads.config import TRIAL_FIELDS, ConfigError, TrialConfig, from_dict, omegaconf_error, parse_fraction, validate
from workloads.telemetry.schema import EVENT_KINDS

# detectors (`events.kind`) that end a trial unless told otherwise; chosen on the detection corpus's dev split
# (docs/detection.md)
DEFAULT_STOP_ON = ("co_pgd_probe", "ro", "nan")


@dataclass
class RunConfig(TrialConfig):
    """`energy-at train`'s config: the trial's fields, and how this run watches it (the runner's, not the
    trial's: neither changes what the trial computes, its id or its config in a sweep)."""

    # energy detectors that end the trial when they fire (`energy-at detect` kinds); []: train every epoch
    stop_on: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_ON))
    # the detectors' settings, their defaults the detector functions' (analysis/detectors.py): detect.ro.patience=20
    detect: DetectorSettings = field(default_factory=DetectorSettings)
    # experiment trackers that get the trial as a run (orchestrator/tracking, docs/tracking.md); []: none
    tracking: list[str] = field(default_factory=list)


RUN_FIELDS = tuple(f.name for f in fields(RunConfig) if f.name not in TRIAL_FIELDS)  # how the run is watched


def run_config(trial: TrialConfig, stop_on=DEFAULT_STOP_ON, tracking=(), detect: DetectorSettings | None = None) -> RunConfig:
    """`trial` to be run with `stop_on`, `detect` and `tracking` (a sweep hands its settings down this way)."""
    return RunConfig(**{name: getattr(trial, name) for name in TRIAL_FIELDS}, stop_on=list(stop_on),
                     detect=detect if detect is not None else DetectorSettings(), tracking=list(tracking))


def trial_part(cfg: TrialConfig) -> TrialConfig:
    """The trial's own fields of `cfg` (a RunConfig less the runner's)."""
    return TrialConfig(**{name: getattr(cfg, name) for name in TRIAL_FIELDS})


def check_detect(settings: DetectorSettings, field_name: str = "detect") -> None:
    """ConfigError for detector settings that type checks pass but the detectors refuse."""
    if problem := settings_problem(settings, f"{field_name}."):
        setting, why = problem
        raise ConfigError(f"{field_name}.{setting}", why)


def check_stop_on(kinds: list[str], field_name: str = "stop_on") -> None:
    """ConfigError(field_name, ...) for a kind that is no stoppable detector (`events.kind`)."""
    for kind in kinds:
        if kind not in EVENT_KINDS:
            raise ConfigError(field_name, f"unknown detector {kind!r}; allowed: {', '.join(EVENT_KINDS)}")


CONFIG_MODULE = "orchestrator.conf"
ConfigStore.instance().store(name="trial_schema", node=RunConfig)

FRACTION_FIELDS = ("attack.eps", "attack.alpha", "eval.pgd_alpha")  # numbers that may be written as 8/255

# The user config dirs of the command being run: entries of Hydra's `hydra.searchpath`
# (`file:///abs/dir`, `pkg://module`), added to every composition made inside `search_path(...)`.
_SEARCH_PATH: ContextVar[tuple[str, ...]] = ContextVar("energy_at_search_path", default=())


# --- fractions ------------------------------------------------------------------------------------------
def with_fractions(overrides: list[str]) -> list[str]:
    """The overrides with `attack.eps=8/255` (also `attack.alpha`, `eval.pgd_alpha`, and in comma
    lists such as `attack.eps=4/255,8/255`) written as decimal numbers; other overrides unchanged."""
    out = []
    for text in overrides:
        key, eq, value = text.partition("=")
        if not eq or "/" not in value or key.lstrip("+~") not in FRACTION_FIELDS:
            out.append(text)
            continue
        try:
            parsed = OverridesParser.create().parse_override(text).value()
        except OverrideParseException:
            out.append(text)  # Hydra's own error, when the override is composed
            continue
        name = key.lstrip("+~")

        def number(v: Any) -> Any:
            return repr(parse_fraction(name, v)) if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)

        if isinstance(parsed, str):
            out.append(f"{key}={number(parsed)}")
        elif isinstance(parsed, ChoiceSweep) and all(isinstance(v, (str, int, float)) for v in parsed.list):
            out.append(f"{key}={','.join(number(v) for v in parsed.list)}")
        else:
            out.append(text)
    return out


# --- the config search path -------------------------------------------------------------------------------
@contextlib.contextmanager
def search_path(entries: list[str] | tuple[str, ...]) -> Iterator[None]:
    """Compose with these `hydra.searchpath` entries (user config dirs) inside the block."""
    token = _SEARCH_PATH.set(tuple(entries))
    try:
        yield
    finally:
        _SEARCH_PATH.reset(token)


def searchpath_entry(directory: str, flag: str = "--config-dir") -> str:
    """A user config dir -> `file:///abs/dir`; ConfigError if it is not a directory."""
    path = Path(os.path.expanduser(directory)).resolve()
    if not path.is_dir():
        raise ConfigError(flag, f"no such directory {directory!r}; pass a folder that holds config groups, "
                          "e.g. DIR/method/mine.yaml (then method=mine)")
    return f"file://{path}"


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _searchpath_override(entries: tuple[str, ...] | list[str]) -> list[str]:
    return [f"hydra.searchpath=[{','.join(_quote(e) for e in entries)}]"] if entries else []


def _prepared(overrides: list[str]) -> list[str]:
    return [*with_fractions(overrides), *_searchpath_override(_SEARCH_PATH.get())]


# --- composing --------------------------------------------------------------------------------------------
def _group_error(e: MissingConfigException) -> ConfigError:
    """Hydra's multi-line 'Could not find method/foo' as one line naming the field and the options."""
    missing = e.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if group and e.options:
        return ConfigError(group, f"unknown value {choice!r}; allowed: {', '.join(sorted(e.options))}")
    return ConfigError("config", str(e).splitlines()[0])


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Hydra's errors inside the block become one-line ConfigErrors."""
    try:
        yield
    except MissingConfigException as e:
        raise _group_error(e) from None
    except HydraException as e:
        cause = e.__cause__
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            raise omegaconf_error(cause) from None
        raise ConfigError("override", (getattr(cause, "msg", None) or str(e)).splitlines()[0]) from None


def compose_config(name: str, overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """Compose `orchestrator/conf/<name>.yaml` (and the user config dirs of `search_path`) with overrides;
    Hydra's errors become one-line ConfigErrors. `hydra_config`: keep the `hydra` node."""
    overrides = _prepared(overrides)
    with _one_line_errors(), initialize_config_module(CONFIG_MODULE, version_base=None):
        return compose(name, overrides=overrides, return_hydra_config=hydra_config)


def compose_trial(overrides: list[str]) -> RunConfig:
    """Hydra overrides -> a validated RunConfig (raises ConfigError with a one-line message)."""
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        head, _, rest = key.partition(".")
        if head in ("sweep", "cluster"):  # not in TrialConfig: say whose setting it is
            meant = rest if rest in {f.name for f in fields(RunConfig)} else None
            raise ConfigError(key, "a setting of energy-at sweep, not of one trial"
                              + (f"; did you mean {meant}?" if meant else f": energy-at sweep {text}"))
    return validated(OmegaConf.to_container(compose_config("train", overrides), resolve=True))  # type: ignore[arg-type]


def validated(d: dict[str, Any]) -> RunConfig:
    """A plain dict (Hydra job config, Ray Tune config) -> a validated RunConfig."""
    d = {k: v for k, v in d.items() if k != "hydra"}
    cfg = from_dict(d, RunConfig)
    validate(cfg)
    check_stop_on(cfg.stop_on)
    check_detect(cfg.detect)
    check_trackers(cfg.tracking)
    return cfg


# --- Hydra's flags -------------------------------------------------------------------------------------
CFG_TYPES = ("job", "hydra", "all")
INFO_TYPES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath", "groups")
_ALIASES = {"-c": "--cfg", "-p": "--package", "-i": "--info", "-cd": "--config-dir", "-m": "--multirun",
            "-h": "--help"}
_VALUE = ("--cfg", "--package", "--config-dir")
_SWITCH = ("--resolve", "--multirun", "--help")
_UNSUPPORTED = {"--config-name": "the primary config is orchestrator/conf/{name}.yaml",
                "-cn": "the primary config is orchestrator/conf/{name}.yaml",
                "--config-path": "the configs are orchestrator/conf/", "-cp": "the configs are orchestrator/conf/"}


@dataclass
class HydraFlags:
    """Hydra's own command-line flags, as `energy-at train|sweep` take them."""
    cfg: str | None = None  # --cfg job|hydra|all
    resolve: bool = False
    package: str | None = None
    info: str | None = None  # --info [all|config|defaults|defaults-tree|plugins|searchpath|groups]
    help: bool = False
    multirun: bool = False
    searchpath: list[str] = field(default_factory=list)  # from --config-dir and hydra.searchpath=[...]

    @classmethod
    def parse(cls, argv: list[str], command: str = "train") -> tuple["HydraFlags", list[str]]:
        """(the flags, the remaining overrides); `hydra.searchpath=[...]` overrides also go to `searchpath`.
        ConfigError naming the flag for a bad or unsupported one."""
        flags, overrides = cls(), []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if not arg.startswith("-"):
                key, _, value = arg.partition("=")
                if key.lstrip("+~") == "hydra.searchpath":
                    flags.searchpath += _searchpath_value(value)
                else:
                    overrides.append(arg)
                continue
            name, eq, value = arg.partition("=")
            if name in _UNSUPPORTED:
                why = _UNSUPPORTED[name].format(name=command)
                raise ConfigError(name, f"not supported by energy-at {command}: {why}; add your own configs with "
                                  "--config-dir DIR")
            name = _ALIASES.get(name, name)
            if name in _SWITCH and not eq:
                setattr(flags, name[2:], True)
            elif name == "--info":
                if not eq and i < len(argv) and not argv[i].startswith("-") and "=" not in argv[i]:
                    value, i = argv[i], i + 1
                value = value or "all"
                if value not in INFO_TYPES:
                    raise ConfigError("--info", f"unknown value {value!r}; allowed: {', '.join(INFO_TYPES)}")
                flags.info = value
            elif name in _VALUE:
                if not eq:
                    if i >= len(argv) or argv[i].startswith("-"):
                        choices = f" ({'|'.join(CFG_TYPES)})" if name == "--cfg" else ""
                        raise ConfigError(name, f"needs a value{choices}")
                    value, i = argv[i], i + 1
                if name == "--cfg":
                    if value not in CFG_TYPES:
                        raise ConfigError("--cfg", f"unknown value {value!r}; allowed: {', '.join(CFG_TYPES)}")
                    flags.cfg = value
                elif name == "--package":
                    flags.package = value
                else:
                    flags.searchpath.append(searchpath_entry(value))
            else:
                raise ConfigError(arg, f"unknown flag; energy-at {command} takes --cfg job|hydra|all [--resolve] "
                                  "[--package PKG], --info, --config-dir DIR, "
                                  + ("-m, " if command == "train" else "") + "--help and key=value overrides")
        if flags.cfg and flags.info:
            raise ConfigError("--cfg", "use either --cfg or --info")
        if (flags.resolve or flags.package) and not flags.cfg:
            raise ConfigError("--resolve" if flags.resolve else "--package", "only goes with --cfg job|hydra|all")
        return flags, overrides


def _searchpath_value(value: str) -> list[str]:
    """`hydra.searchpath=[file://DIR,pkg://mod]` -> its entries (file:// ones made absolute and checked)."""
    try:
        parsed = OverridesParser.create().parse_override(f"hydra.searchpath={value}").value()
    except OverrideParseException as e:
        raise ConfigError("hydra.searchpath", str(e).splitlines()[0]) from None
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise ConfigError("hydra.searchpath", "must be a list of config dirs, e.g. hydra.searchpath=[file://DIR], "
                          f"got {value!r}")
    entries = []
    for v in parsed:
        if v.startswith("pkg://"):
            entries.append(v)
        else:
            entries.append(searchpath_entry(v.removeprefix("file://"), "hydra.searchpath"))
    return entries


# --- what the flags show ------------------------------------------------------------------------------------
def config_yaml(name: str, overrides: list[str], cfg_type: str = "job", package: str | None = None,
                resolve: bool = False, extra_trials: list[str] | None = None) -> str:
    """What Hydra's `--cfg job|hydra|all` prints for the composed `name` config: the job's fields,
    the `hydra` node (without its help texts), or both. `extra_trials` (a sweep's command-line
    trial overrides) are appended to `sweep.trial`, so the sweep's printout holds every axis."""
    cfg = compose_config(name, overrides, hydra_config=cfg_type != "job")
    with flag_override(cfg, ["struct", "readonly"], [False, False]):
        if extra_trials and "sweep" in cfg:
            cfg.sweep.trial = [*cfg.sweep.trial, *extra_trials]
        if cfg_type == "hydra":
            for key in [k for k in cfg if k != "hydra"]:
                del cfg[key]
    if "hydra" in cfg:
        with flag_override(cfg.hydra, ["struct", "readonly"], [False, False]):
            for key in ("help", "hydra_help"):
                cfg.hydra.pop(key, None)
    node: Any = cfg
    if package:
        node = OmegaConf.select(cfg, package.replace("/", "."))
        if node is None:
            raise ConfigError("--package", f"no {package!r} in the config; e.g. --package attack")
    try:
        if resolve and OmegaConf.is_config(node):
            OmegaConf.resolve(node)
        text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else f"{node}\n"
    except OmegaConfBaseException as e:
        raise ConfigError("--resolve", str(e).splitlines()[0]) from None
    return (f"# @package {package}\n" if package and OmegaConf.is_config(node) else "") + text


def config_groups(name: str, overrides: list[str] | tuple[str, ...] = (), skip: tuple[str, ...] = (),
                  also: tuple[str, ...] = ()) -> dict[str, tuple[list[str], str | None]]:
    """{group: (its options, the current choice)} of the `name` config, read by Hydra's config loader
    from orchestrator/conf/ and the user config dirs; `hydra` groups and `skip` left out, the nested
    groups of `also` (e.g. hydra/launcher) added."""
    from hydra.core.global_hydra import GlobalHydra

    prepared = _prepared(list(overrides))
    with _one_line_errors(), initialize_config_module(CONFIG_MODULE, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        try:
            choices = dict(compose(name, overrides=prepared, return_hydra_config=True).hydra.runtime.choices)
        except (HydraException, OmegaConfBaseException):
            choices = {}
        groups = loader.get_group_options("", results_filter=ObjectType.GROUP, config_name=name, overrides=prepared)
        return {g: (loader.get_group_options(g, config_name=name, overrides=prepared), choices.get(g))
                for g in [*sorted(groups), *also] if g != "hydra" and g not in skip}


def format_groups(groups: dict[str, tuple[list[str], str | None]]) -> str:
    w = max((len(g) for g in groups), default=0) + 1
    return "\n".join(f"  {g + ':':<{w}} " + " ".join(f"{o}*" if o == choice else o for o in options)
                     for g, (options, choice) in groups.items())


def show_info(name: str, overrides: list[str], info: str = "all", skip: tuple[str, ...] = ()) -> None:
    """Hydra's `--info` for the `name` config (search path, defaults tree and list, config, plugins),
    then the config groups. Hydra logs it to stdout; the logging set-up is restored afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    prepared = _prepared(overrides)
    if info != "groups":
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        try:
            with _one_line_errors(), initialize_config_module(CONFIG_MODULE, version_base=None):
                GlobalHydra.instance().hydra.show_info(info, config_name=name, overrides=prepared)
        finally:
            for h in [h for h in root.handlers if h not in handlers]:
                h.flush()
                root.removeHandler(h)
            root.setLevel(level)
    if info in ("all", "groups"):
        print(f"\nConfig groups (GROUP=OPTION; * the current choice)\n{'*' * 50}\n"
              + format_groups(config_groups(name, overrides, skip)))
