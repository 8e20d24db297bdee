"""Composing and validating trial configs from Hydra overrides, before any work starts."""
from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from workloads.config import ConfigError, TrialConfig, from_dict, validate

CONFIG_MODULE = "orchestrator.conf"
ConfigStore.instance().store(name="trial_schema", node=TrialConfig)


def _group_error(e: MissingConfigException) -> ConfigError:
    """Hydra's multi-line 'Could not find method/foo' as one line naming the field and the options."""
    missing = e.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if group and e.options:
        return ConfigError(group, f"unknown value {choice!r}; allowed: {', '.join(sorted(e.options))}")
    return ConfigError("config", str(e).splitlines()[0])


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose `orchestrator/conf/<name>.yaml` with overrides; Hydra's errors become one-line ConfigErrors."""
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            return compose(name, overrides=overrides)
    except MissingConfigException as e:
        raise _group_error(e) from None
    except HydraException as e:
        cause = e.__cause__
        key = getattr(cause, "full_key", None)
        msg = getattr(cause, "msg", None) or str(e)
        raise ConfigError(key or "override", msg.splitlines()[0]) from None


def compose_trial(overrides: list[str]) -> TrialConfig:
    """Hydra overrides -> a validated TrialConfig (raises ConfigError with a one-line message)."""
    return validated(OmegaConf.to_container(compose_config("train", overrides), resolve=True))  # type: ignore[arg-type]


def validated(d: dict[str, Any]) -> TrialConfig:
    """A plain dict (Hydra job config, Ray Tune config) -> a validated TrialConfig."""
    d = {k: v for k, v in d.items() if k != "hydra"}
    cfg = from_dict(d)
    validate(cfg)
    return cfg
