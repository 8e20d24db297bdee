"""The run directory `<out>`: every path under it, the one atomic write, and a trial's result.

    <out>/<table>/<id>/part-NNNNNN[-MMMMMM].parquet telemetry tables (workloads/telemetry; a merged
                                                   part covers NNNNNN..MMMMMM; earlier sweeps: trial=<id>/)
    <out>/trials/trial=<id>/config.json            the trial's flattened config
    <out>/trials/trial=<id>/result.json            status, progress, best and test accuracies
    <out>/checkpoints/trial=<id>/{last,best}.pt    resume state and best-val weights
    <out>/slurm/...                                Slurm job records (cluster/, orchestrator/)
    <out>/tune/                                    Ray Tune's experiment state
    <out>/tracking/<id>.json                       what each experiment tracker has of the trial (orchestrator/tracking)
    <out>/mlflow.db                                MLflow's store (unless MLFLOW_TRACKING_URI names another)
    <out>/tensorboard/<id>/                        TensorBoard event files of the trial (tracking=[tensorboard])
    <out>/wandb/                                   W&B's run folders (unless WANDB_DIR names another parent)

Every file here is written whole or not at all: to a hidden temp name beside it, fsynced,
then renamed over the target (`atomic_write`), so a reader, a crash or a `kill -9` never
leaves a partial file. Readers skip hidden names (`.x.tmp`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from workloads.errors import ConfigError

# result.json `status`: `running` while the trial trains, then how it ended. One success rule for every
# command's exit status and every tracker: it ran to a recorded end (a diverged trial is a result of its config);
# `failed` means it raised, `stopped` that a detector or Tune's scheduler ended it early.
STATUSES = ("running", "finished", "stopped", "diverged", "failed")
SUCCEEDED = ("finished", "stopped", "diverged")


# result.json's fields (every writer goes through RunDir.write_result, which refuses any other)
RESULT_FIELDS: dict[str, str] = {
    "trial": "trial id",
    "status": "one of STATUSES",
    "reason": "why it ended so, in one line (null when finished)",
    "epochs_done": "epochs trained (1-based count)",
    "steps_done": "optimiser steps taken",
    "best_val_acc_pgd": "best val PGD accuracy so far",
    "best_epoch": "its epoch (0-based, as the tables)",
    "stopped_by": "the detector kind or Tune scheduler that stopped it, or null",
    "out": "the sweep directory",
    "seconds": "wall time of the run that ended it",
    "test_n": "test images evaluated",
    "test_acc_nat": "clean test accuracy of the last model",
    "test_acc_pgd": "PGD test accuracy of the last model",
    "best_test_acc_nat": "clean test accuracy of the best-val checkpoint",
    "best_test_acc_pgd": "PGD test accuracy of the best-val checkpoint",
}


def succeeded(result: dict | None) -> bool:
    """Did the trial of this result.json end as a trial may (finished, stopped or diverged)?"""
    return result is not None and result.get("status") in SUCCEEDED


class CheckpointError(ValueError):
    """A path that names no usable checkpoint (missing, unreadable, of another trial); the message is one line."""


class DiskFull(OSError):
    """A write under `<out>` found no space left on its device; nothing partial was kept."""


def _no_space(error: BaseException) -> bool:
    """Is `error` a full device? torch.save's zip writer and pyarrow report it in their own words."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, (OSError, RuntimeError)) and any(
        s in str(error) for s in ("No space left", "unexpected pos", "file write failed"))


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None], mode: int = 0o644) -> Path:
    """Write `data` (text, bytes, or a function that writes a given path) to `path` atomically,
    with permissions `mode` from the start (0o600 keeps a secret unreadable even as a temp file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temp
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        os.chmod(tmp, mode)
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _no_space(e):
            raise DiskFull(f"no space left on the device writing {path}: free some space and run the same "
                           "command again; the trial resumes from its last checkpoint") from None
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, default=str))


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object at `path`, or None if it is missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


LEGACY_PREFIX = "trial="  # table folders of sweeps written before the bare-id layout


class RunDir:
    """Paths of one run directory (a sweep's or a trial's `out`)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def create(self, field: str = "out") -> "RunDir":
        """Make the directory, or raise ConfigError(field, ...) saying why it cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test.{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise ConfigError(field, f"cannot write to {str(self.root)!r} ({e.strerror}); pass a folder you can "
                              f"write, e.g. {field}=runs/NAME") from None
        return self

    def lock_file(self, folder: str | os.PathLike | None = None) -> Path:
        """The lock `lock(folder)` holds: `<folder or root>/.lock`."""
        return (Path(folder) if folder is not None else self.root) / ".lock"

    @contextlib.contextmanager
    def lock(self, path: str | os.PathLike | None = None) -> Iterator[None]:
        """Hold `<path or root>/.lock` for this process (flock: released when the process dies);
        ConfigError('out', ...) naming the holder if another live process has it."""
        folder = Path(path) if path is not None else self.root
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file(folder), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                raise ConfigError("out", f"{str(folder)!r} is in use by {holder}; wait for it to end, "
                                  "or pass another out") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                         f"({' '.join(sys.argv[:6])[:200]})\n".encode())
            yield
        finally:
            os.close(fd)  # releases the lock

    def table(self, table: str, trial: str | None = None) -> Path:
        """A telemetry table's folder, or one trial's folder in it: `<table>/<id>/`.

        The folder is the bare trial id, not a hive `trial=<id>`: the files hold `trial` as a
        string column, and a hive folder makes pandas/pyarrow read it a second time as a
        dictionary and refuse the table. A trial written before (`trial=<id>/`) keeps its folder.
        """
        if trial is None:
            return self.root / table
        legacy = self.root / table / f"{LEGACY_PREFIX}{trial}"
        return legacy if legacy.is_dir() else self.root / table / trial

    def trial(self, trial: str) -> Path:
        return self.root / "trials" / f"trial={trial}"

    def trials(self) -> list[Path]:
        return sorted((self.root / "trials").glob("trial=*"))

    def trial_ids(self) -> list[str]:
        """Ids of the trials with a folder under trials/, sorted."""
        return [p.name.removeprefix("trial=") for p in self.trials() if p.is_dir()]

    def checkpoints(self, trial: str) -> Path:
        return self.root / "checkpoints" / f"trial={trial}"

    def checkpoint(self, trial: str, which: str) -> Path:
        """`which` (last, best) .pt of the trial."""
        return self.checkpoints(trial) / f"{which}.pt"

    def config_file(self, trial: str) -> Path:
        return self.trial(trial) / "config.json"

    def result_file(self, trial: str) -> Path:
        return self.trial(trial) / "result.json"

    def checkpointed(self) -> list[str]:
        """Ids of the trials with a checkpoints folder."""
        return sorted(d.name.removeprefix("trial=") for d in (self.root / "checkpoints").glob("trial=*") if d.is_dir())

    @staticmethod
    def of_trial_folder(folder: str | os.PathLike) -> tuple[RunDir, str] | None:
        """(the run dir, the trial id) of a trial's folder (`<out>/trials/trial=<id>` or
        `<out>/checkpoints/trial=<id>`), or None for any other path."""
        folder = Path(folder)
        if folder.name.startswith("trial=") and folder.parent.name in ("checkpoints", "trials"):
            return RunDir(folder.parent.parent), folder.name.removeprefix("trial=")
        return None

    def slurm(self, *parts: str) -> Path:
        return self.root.joinpath("slurm", *parts)

    def tune(self) -> Path:
        return self.root / "tune"

    # --- experiment trackers (orchestrator/tracking) ----------------------------------------------
    def tracking_state(self, trial: str) -> Path:
        """The trackers' resume state of a trial: last epoch pushed and run ids, per tracker."""
        return self.root / "tracking" / f"{trial}.json"

    def read_tracking(self, trial: str) -> dict:
        return read_json(self.tracking_state(trial)) or {}

    def write_tracking(self, trial: str, state: dict) -> None:
        write_json(self.tracking_state(trial), state)

    def mlflow_uri(self) -> str:
        """MLFLOW_TRACKING_URI if set, else `sqlite:///<out>/mlflow.db` (MLflow's recommended local store)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root.resolve() / 'mlflow.db'}"

    def tensorboard(self, trial: str | None = None) -> Path:
        """`<out>/tensorboard/` (`tensorboard --logdir` it), or one trial's folder in it."""
        return self.root / "tensorboard" if trial is None else self.root / "tensorboard" / trial

    def wandb_dir(self) -> Path:
        """The folder W&B makes its `wandb/` in: WANDB_DIR if set, else `<out>`."""
        return Path(os.environ.get("WANDB_DIR") or self.root)

    # --- a trial's config and result --------------------------------------------------------------
    def read_config(self, trial: str) -> dict | None:
        return read_json(self.config_file(trial))

    def write_config(self, trial: str, config: dict) -> None:
        write_json(self.config_file(trial), config)

    def read_result(self, trial: str) -> dict | None:
        return read_json(self.result_file(trial))

    def write_result(self, trial: str, result: dict) -> None:
        """The only writer of result.json; its fields are RESULT_FIELDS, its status one of STATUSES."""
        unknown = sorted(set(result) - set(RESULT_FIELDS))
        if unknown or result.get("status") not in STATUSES or result.get("trial") != trial:
            raise ValueError(f"result.json of {trial}: fields {unknown} are not in run_dir.RESULT_FIELDS, or status "
                             f"{result.get('status')!r} not in {STATUSES}, or trial {result.get('trial')!r} is not it")
        write_json(self.result_file(trial), result)
