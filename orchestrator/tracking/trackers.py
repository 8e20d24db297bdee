"""Which experiment trackers exist, and the modules each needs installed (`energy-at[<name>]` installs them)."""
from __future__ import annotations

import importlib.util

from workloads.errors import ConfigError

# tracker name -> the modules it imports (the first is the tracker's own library); `energy-at[<name>]` installs them
TRACKERS: dict[str, tuple[str, ...]] = {"mlflow": ("mlflow", "sqlalchemy", "alembic"),
                                        "tensorboard": ("tensorboardX",), "wandb": ("wandb",)}


def check_trackers(names: list[str], field_name: str = "tracking") -> None:
    """ConfigError(field_name, ...) for an unknown tracker or one whose library is not installed."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(field_name, f"unknown tracker {name!r}; allowed: {', '.join(sorted(TRACKERS))}")
        missing = [m for m in TRACKERS[name] if importlib.util.find_spec(m) is None]
        if missing:
            lacking = "" if missing[0] == TRACKERS[name][0] else f" (no module {missing[0]})"
            raise ConfigError(field_name, f"{name} is not installed{lacking}: pip install 'energy-at[{name}]'")
