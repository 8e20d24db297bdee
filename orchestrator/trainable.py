"""The Ray Tune function that runs one trial: resume from Tune's checkpoint, report every epoch."""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from ray import tune
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback, TBXLoggerCallback
from ray.tune.search.sample import Domain, Sampler
from ray.tune.search.variant_generator import RecursiveDependencyError

from analysis.detectors import DetectorSettings
from orchestrator import runner
from orchestrator.config import DEFAULT_STOP_ON, RunConfig, run_config
from orchestrator.search import SearchPlan
from workloads.config import from_dict
from workloads.run_dir import RunDir, atomic_write
from workloads.trial import Trial


class PerTrial(Domain):
    """A param_space entry whose value is set by the trial: `values[config["trial"]]` (`SweepPlan.param_space`).

    Tune resolves it like any search-space variable once the grid has picked `trial`, so it is one of the
    trial's `evaluated_params`: the console's trial table and TensorBoard's HParams show it, as do the trial's
    config, params.json and the ResultGrid. (`tune.sample_from` would set the config but Tune resolves it
    outside its variables: neither the table nor HParams would show it.) A saved Tune experiment refers to
    this class by name (tuner.pkl): keep the name for `Tuner.restore`."""

    class _Lookup(Sampler):
        def sample(self, domain, config=None, size=1, random_state=None):
            config = config or {}
            config = config.get("config", config)  # Ray's variant generator passes the experiment spec
            trial = config.get("trial")
            if not isinstance(trial, str):  # the grid has not set it yet: Tune retries after the other variables
                raise RecursiveDependencyError(f"a per-trial value needs config['trial'], got {trial!r}")
            value = domain.values[trial]
            return value if size == 1 else [value] * size

    default_sampler_cls = _Lookup

    def __init__(self, values: dict[str, object]):
        self.values = values

    def is_valid(self, value) -> bool:
        return value in self.values.values()

    @property
    def domain_str(self) -> str:
        return f"per trial: {sorted(set(map(repr, self.values.values())))}"


def run_trial(config: dict, configs: dict[str, dict], stop_on=DEFAULT_STOP_ON, detect: DetectorSettings | None = None) -> None:
    """Tune trainable: `config["trial"]` is a trial id, `configs[id]` its TrialConfig as a dict (out = the sweep).

    The trial runs the config validated when the sweep was planned, looked up by id, with the sweep's
    `stop_on` and detector settings `detect`. The other keys of `config` (`method.name`, `seed`, ...: `SweepPlan.params`) are there for
    Tune to show; they are never read."""
    _run(run_config(from_dict(configs[config["trial"]]), stop_on, detect=detect))


def run_suggested(config: dict, search: SearchPlan, stop_on=DEFAULT_STOP_ON, detect: DetectorSettings | None = None) -> None:
    """Tune trainable of a search algorithm: `config` holds its values for every axis (`SearchPlan`)."""
    _run(run_config(search.config(config), stop_on, detect=detect))


def _run(cfg: RunConfig) -> None:
    """Run one trial under Tune (orchestrator/runner.py; its trackers are the driver's, TrackingCallback):
    resume from Tune's checkpoint, report and
    checkpoint every epoch. A trial with nothing left to train (a repeat of a finished one) reports its
    stored result once, so Tune and the searcher see it."""
    last = RunDir(cfg.out).checkpoints(cfg.trial_id) / "last.pt"
    reports = 0

    def restore() -> None:  # under the trial's lock, before the trial resumes
        restored = tune.get_checkpoint()
        if restored is not None:  # Tune's copy wins: telemetry is then truncated to match it (exactly once)
            with restored.as_directory() as d:
                atomic_write(last, lambda tmp: shutil.copy2(Path(d) / "last.pt", tmp))

    def on_epoch(trial: Trial, metrics: dict) -> None:
        nonlocal reports
        reports += 1
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(last, Path(tmp) / "last.pt")
            tune.report(metrics | {"trial": trial.id}, checkpoint=tune.Checkpoint.from_directory(tmp))

    summary = runner.run(cfg, on_epoch, before=restore)  # a stop ends this function: Tune sees the trial end
    if not reports:
        tune.report({"trial": cfg.trial_id, "epoch": summary["epochs_done"] - 1,
                     "val_acc_pgd": summary["best_val_acc_pgd"], "stopped": summary["status"] == "stopped"})


class TuneTensorBoard(LoggerCallback):
    """Tune's TensorBoard logger (events beside each trial's Tune results, with the config as HParams), held
    instead of subclassed: Tune prints a TensorBoard hint for a TBXLoggerCallback, naming its temporary
    staging folder; the sweep names `<out>/tune` itself (orchestrator/cli.py)."""

    _SAVED_FILE_TEMPLATES = TBXLoggerCallback._SAVED_FILE_TEMPLATES

    def __init__(self):
        self.inner = TBXLoggerCallback()

    def log_trial_start(self, trial) -> None:
        self.inner.log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self.inner.log_trial_result(iteration, trial, result)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self.inner.log_trial_end(trial, failed)


def tune_loggers() -> list[LoggerCallback]:
    """The loggers Tune would add itself (CSV, JSON, TensorBoard when tensorboardX is installed), for a sweep
    that turns Tune's own off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS)."""
    loggers: list[LoggerCallback] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TuneTensorBoard())
    return loggers


class SchedulerStops(Callback):
    """Records in result.json the trials that Tune's scheduler ended (ASHA): Tune stops such a trial's
    actor right after a report, before the trial can write why it ended, so the driver does it. A trial
    that ended by itself has already written `finished` / `stopped` and is left alone."""

    def __init__(self, out: str, scheduler: str):
        self.out, self.scheduler = out, scheduler

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        last = trial.last_result or {}
        tid, run_dir = last.get("trial"), RunDir(self.out)
        result = run_dir.read_result(tid) if isinstance(tid, str) else None
        if result is None or result.get("status") != "running" or "epoch" not in last:
            return
        best = (trial.metric_analysis.get("val_acc_pgd") or {}).get("max", result.get("best_val_acc_pgd"))
        run_dir.write_result(tid, result | {
            "status": "stopped", "stopped_by": self.scheduler, "epochs_done": last["epoch"] + 1,
            "steps_done": last.get("step", -1) + 1, "best_val_acc_pgd": best,
            "reason": f"{self.scheduler}: Tune's scheduler ended the trial after epoch {last['epoch'] + 1} "
                      "(no test evaluation: energy-at eval runs one)"})
