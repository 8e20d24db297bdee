"""`SweepPlan`: many trials through Ray Tune, on embedded Ray or on a Ray cluster inside a Slurm job.

    overrides -> SweepConfig -> planned, validated TrialConfigs -> Tuner -> telemetry under
    <sweep.out> -> energy stopper -> report
"""
from __future__ import annotations

import difflib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from analysis.detectors import DetectorSettings
from orchestrator.config import DEFAULT_STOP_ON, ConfigError, check_detect, check_stop_on, compose_config, compose_trial, trial_part
from orchestrator.search import SEARCHES, SearchPlan
from orchestrator.space import axes, expand
from orchestrator.tracking.trackers import check_trackers
from workloads.config import RUN_ONLY, TrialConfig, flatten, legacy_trial_id, trial_id
from workloads.run_dir import RunDir

NO_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
# the trial fields a sweep sets for every trial itself (`sweep.out`, ids); `sweep.stop_on` it hands each trial's run
SWEEP_SETS = ("out", "trial_id")
TRIAL_KEYS = {f.name for f in fields(TrialConfig)} - set(SWEEP_SETS)  # every other field of `train`


@dataclass
class Resources:
    cpus: float = 1  # per trial; torch uses this many threads
    gpus: float = 0  # per trial; a fraction lets several small trials share one GPU


@dataclass
class SweepSettings:
    name: str | None = None  # Tune's experiment, the Slurm job's and MLflow's name; None: the name of `out`
    out: str = "runs/sweep"  # the sweep directory: telemetry tables, trial configs, checkpoints, Tune state
    trial: list[str] = field(default_factory=list)  # trial overrides in Hydra sweep syntax
    # grid: every grid point x `num_samples` draws of the interval(...) axes, planned and validated up front;
    # optuna: Tune's OptunaSearch picks `num_samples` trials from the comma lists and intervals (search.py)
    search: str = "grid"
    num_samples: int = 1  # grid: random draws per grid point; optuna: trials in all
    seed: int = 0  # seed of those draws (and of the Optuna sampler)
    scheduler: str = "fifo"  # fifo | asha
    stop_on: list[str] = field(default_factory=lambda: list(DEFAULT_STOP_ON))  # [] = no energy stopper
    detect: DetectorSettings = field(default_factory=DetectorSettings)  # the detectors' settings: sweep.detect.ro.patience=20
    # experiment trackers fed by the Tune driver (orchestrator/tracking/): mlflow, tensorboard, wandb
    tracking: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 1  # retries of a crashing trial before it is marked failed
    max_concurrent: int = 0  # 0: as many as the resources allow
    report: bool = True


@dataclass
class ClusterConfig:
    kind: str = "local"  # local | slurm
    dashboard: bool = False
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    partition: str | None = None
    timeout_min: int = 60
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None


@dataclass
class SweepConfig:
    sweep: SweepSettings = field(default_factory=SweepSettings)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
SCHEDULERS = ("fifo", "asha")


def _is_trial_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key.split(".", 1)[0] in TRIAL_KEYS


def _check_sweep_arg(override: str) -> None:
    """ConfigError for an override that is neither a trial field nor under sweep./cluster., naming the
    setting it most likely meant (`stop_on=[]` -> sweep.stop_on, `nodes=2` -> cluster.nodes)."""
    key = override.split("=", 1)[0].lstrip("+~")
    head, dot, rest = key.partition(".")
    if head in ("sweep", "cluster"):
        return
    if key == "trial_id":
        raise ConfigError(key, "the sweep names each trial after its config: drop trial_id")
    names = {k: k for k in TRIAL_KEYS}  # bare name -> what to write; trial fields first
    for section, schema in (("sweep", SweepSettings), ("cluster", ClusterConfig)):
        names[section] = section
        for f in fields(schema):
            names.setdefault(f.name, f"{section}.{f.name}")
    meant = head if head in names else next(iter(difflib.get_close_matches(head, names, n=1)), None)
    value = override.partition("=")[2]
    hint = f"did you mean {names[meant]}{dot}{rest}{'=' + value if value else ''}? " if meant else ""
    raise ConfigError(key, f"not a trial field nor a sweep./cluster. setting; {hint}"
                      f"trial fields: {', '.join(sorted(TRIAL_KEYS))}")


class SweepPlan:
    """A validated plan of trials and how to run them."""

    def __init__(self, config: SweepConfig, trials: list[TrialConfig], legacy: dict[str, TrialConfig] | None = None,
                 search: SearchPlan | None = None):
        self.config, self.settings, self.cluster = config, config.sweep, config.cluster
        self.dir = Path(self.settings.out).resolve()
        self.trials = trials  # [] when a search algorithm picks them (`search`)
        self.legacy = legacy or {}  # the trials by `legacy_trial_id`: a Tune experiment of an earlier version
        self.search = search

    @classmethod
    def from_overrides(cls, argv: list[str], create: bool = True) -> "SweepPlan":
        """`energy-at sweep` arguments -> a SweepPlan whose every trial config is already validated;
        `create`: also create the sweep directory (False: a dry run that writes nothing)."""
        trial_args = [a for a in argv if _is_trial_override(a)]
        sweep_args = [a for a in argv if not _is_trial_override(a)]
        for a in sweep_args:
            _check_sweep_arg(a)
        cfg = compose_config("sweep", sweep_args)
        config: SweepConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        s = config.sweep
        _validate_settings(config)
        out = Path(s.out).resolve()
        s.name = s.name or out.name

        def planned(overrides: list[str], label: str) -> TrialConfig:
            try:
                t = compose_trial([*overrides, f"out={out}"])
            except ConfigError as e:
                raise ConfigError(label, str(e)) from None
            threads = max(1, int(s.resources.cpus))
            device = "cuda" if s.resources.gpus > 0 else "cpu"
            t = replace(trial_part(t), threads=t.threads or threads, device=device if t.device == "auto" else t.device)
            return replace(t, trial_id=trial_id(t))

        def check_devices(devices: list[str]) -> None:
            if config.cluster.kind != "local":
                return  # trials run on the cluster's nodes
            import ray

            if not ray.is_initialized():  # a Ray already up (a cluster, a test's mock GPU) brings its own
                _check_local_gpus(s.resources.gpus)
            from workloads.trial import resolve_device

            for device in devices:
                resolve_device(device)  # ConfigError('device', ...) for a CUDA device this machine lacks

        if s.search != "grid":
            search = SearchPlan.validated(axes([*s.trial, *trial_args]),
                                          lambda o: planned(o, f"search space ({' '.join(o)})"))
            check_devices([b["device"] for b in search.bases.values()])
            if create:
                RunDir(out).create("sweep.out")
            return cls(config, [], search=search)
        trials = [planned(o, f"trial {i} ({' '.join(x for x in o if x in trial_args or '=' in x)})".replace(" ()", ""))
                  for i, o in enumerate(expand([*s.trial, *trial_args], s.num_samples, s.seed))]
        legacy = {legacy_trial_id(t): t for t in trials}
        unique: dict[str, TrialConfig] = {}
        for t in trials:
            unique.setdefault(t.trial_id, t)
        if len(unique) < len(trials):  # e.g. method=fgsm,trades method.beta=1,6: FGSM reads no beta
            print(f"sweep: {len(trials) - len(unique)} of {len(trials)} grid points repeat an earlier one in every "
                  "field their method reads; each trial runs once", file=sys.stderr)
        trials = list(unique.values())
        check_devices([t.device for t in trials])
        if create:
            RunDir(out).create("sweep.out")
        return cls(config, trials, legacy)

    def describe(self) -> str:
        """One line: how many trials, where, and how they run."""
        s = self.settings
        trials = (f"{s.num_samples} trials picked by {s.search} from {len(self.search.bases)} validated categorical "
                  "combination(s)" if self.search else f"{len(self.trials)} trials")
        return (f"sweep {s.name}: {trials} -> {self.dir}  (scheduler {s.scheduler}, energy stopper "
                f"{'on: ' + ','.join(s.stop_on) if s.stop_on else 'off'}, cluster {self.cluster.kind})")

    def table(self) -> str:
        """The planned trials, one a line: the trial id and the values of the keys that vary across trials."""
        params = self.params()
        rows = [["trial", *next(iter(params.values()), {})]]
        rows += [[tid, *(str(v) for v in p.values())] for tid, p in params.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def params(self) -> dict[str, dict]:
        """{trial id: {key: value}} for the flattened config keys that vary across the plan's trials.

        Keys in `flatten` order (`method.name`, `attack.eps`, ..., `seed`), run-only keys left out; a
        `method.*` / `attack.*` field that a trial's method and attack never read is None for that trial
        (`read_fields`, as the ranking shows it). A one-trial sweep varies nothing: {id: {}}."""
        from workloads.methods import read_fields

        flat = {t.trial_id: {k: v for k, v in flatten(t).items() if k not in RUN_ONLY} for t in self.trials}
        read = {tid: read_fields(f) for tid, f in flat.items()}
        keys = list(dict.fromkeys(k for f in flat.values() for k in f))  # every trial has every key: flatten order
        varying = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str)
                                            for r in read.values()}) > 1]
        return {tid: {k: r.get(k) for k in varying} for tid, r in read.items()}

    def param_space(self) -> dict:
        """Tune's param_space: a grid over trial ids (`config["trial"]`, the key the trainable runs by) and, per
        varying key, its value for that trial (`params`). So Tune's config, the ResultGrid, the console table,
        params.json and TensorBoard's HParams show the hyperparameters; the trainable never reads them."""
        from ray import tune

        from orchestrator.trainable import PerTrial

        params = self.params()
        keys = next(iter(params.values()), {})
        return {"trial": tune.grid_search(list(params)),
                **{k: PerTrial({tid: p[k] for tid, p in params.items()}) for k in keys}}

    # --- running ---------------------------------------------------------------------------------
    def tuner(self):
        """A Ray Tune Tuner for the plan (restored from the sweep directory if it ran before)."""
        from ray import tune

        from orchestrator.trainable import run_suggested, run_trial

        s = self.settings
        resources = {"cpu": s.resources.cpus, "gpu": s.resources.gpus}
        storage = str(self.dir / "tune")
        path = os.path.join(storage, s.name)
        restore = tune.Tuner.can_restore(path)
        if self.search is not None:
            trainable = tune.with_parameters(run_suggested, search=self.search, stop_on=list(s.stop_on), detect=s.detect)
        else:
            configs = {t.trial_id: asdict(t) for t in self.trials}  # in Ray's object store, not in every printout
            if restore:  # an experiment an earlier version started names its trials by their legacy ids
                configs |= {old: asdict(replace(t, trial_id=old)) for old, t in self.legacy.items()
                            if old not in configs}
            trainable = tune.with_parameters(run_trial, configs=configs, stop_on=list(s.stop_on), detect=s.detect)
        trainable = tune.with_resources(trainable, resources)
        if restore:
            return tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True)
        scheduler = None
        if s.scheduler == "asha":
            max_t = self.search.max_epochs() if self.search else max(t.epochs for t in self.trials)
            scheduler = tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=1, max_t=max_t)
        if self.search is not None:  # the searcher names no trial id up front: Tune's own trial ids name the folders
            from ray.tune.search.optuna import OptunaSearch

            space, extra = self.search.param_space(), {"search_alg": OptunaSearch(seed=s.seed),
                                                       "num_samples": s.num_samples,
                                                       "trial_dirname_creator": lambda tr: tr.trial_id}
        else:
            space, extra = self.param_space(), {"trial_dirname_creator": lambda tr: tr.config["trial"],
                                                "trial_name_creator": lambda tr: tr.config["trial"]}
        return tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric="val_acc_pgd", mode="max", scheduler=scheduler,
                                        max_concurrent_trials=s.max_concurrent or None, **extra),
            run_config=tune.RunConfig(
                name=s.name, storage_path=storage, callbacks=self.callbacks(),
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1),
        )

    def callbacks(self) -> list:
        """Tune callbacks on the driver: trials the scheduler ended recorded as stopped, then the trackers of
        `sweep.tracking`, fed from the sweep directory (so they see that record)."""
        from orchestrator.trainable import SchedulerStops, tune_loggers

        callbacks = [*tune_loggers(), SchedulerStops(str(self.dir), self.settings.scheduler)]
        if self.settings.tracking:
            from orchestrator.tracking.callback import TrackingCallback

            callbacks.append(TrackingCallback(self.dir, self.settings.tracking))
        return callbacks

    def submit_slurm(self):
        """Submit the sweep as one multi-node Slurm job running `SweepPayload(self)` (cluster/slurm.py)."""
        from cluster.slurm import JobSpec, submit

        c = self.cluster
        spec = JobSpec(name=f"energy-at-{self.settings.name}", folder=RunDir(self.dir).slurm(), nodes=c.nodes,
                       timeout_min=c.timeout_min, cpus_per_node=c.cpus_per_node, gpus_per_node=c.gpus_per_node,
                       mem_gb=c.mem_gb, partition=c.partition, account=c.account, qos=c.qos,
                       dashboard=c.dashboard, env={"PYTHONPATH": _pythonpath()},
                       record={"trials": [{"trial": t.trial_id, "epochs": t.epochs} for t in self.trials]})
        return submit(SweepPayload(self), spec)

    def run_here(self):
        """Run the sweep's Tuner on the Ray this process is connected to (starts embedded Ray if none)."""
        import ray

        if not ray.is_initialized():
            _check_local_gpus(self.settings.resources.gpus)
            ray.init(include_dashboard=self.cluster.dashboard, log_to_driver=True,
                     runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
        self.dir.mkdir(parents=True, exist_ok=True)
        before = os.environ.get(NO_AUTO_LOGGERS)
        os.environ[NO_AUTO_LOGGERS] = "1"  # Tune's loggers come from callbacks(), without its misleading hint
        try:
            return self.tuner().fit()
        finally:
            if before is None:
                os.environ.pop(NO_AUTO_LOGGERS, None)
            else:
                os.environ[NO_AUTO_LOGGERS] = before


class SweepPayload:
    """What the Slurm job runs on node 0 once its Ray cluster is up: the sweep's Tuner, then the report.

    A requeued job runs it again: `tuner()` restores the experiment from the sweep directory."""

    def __init__(self, plan: SweepPlan):
        self.plan = plan  # plain dataclasses and a Path: pickles as is

    def __call__(self) -> dict:
        grid = self.plan.run_here()
        summary = {"trials": {(Path(r.path).name if r.path else str(i)): ("error" if r.error else "ok")
                              for i, r in enumerate(grid)}}
        if self.plan.settings.report:
            from analysis import commands

            summary["report_rc"] = commands.report([str(self.plan.dir)])
        return summary


def _check_local_gpus(gpus: float) -> None:
    """Trials that ask for GPUs would wait forever on embedded Ray without one: say so instead."""
    import torch

    if gpus > 0 and torch.cuda.device_count() < math.ceil(gpus):
        raise ConfigError("sweep.resources.gpus", f"each trial asks for {gpus} GPU(s) but this machine has "
                          f"{torch.cuda.device_count()}; set sweep.resources.gpus=0 or run with cluster=slurm")


def _pythonpath() -> str:
    """Ray workers import workloads/ and analysis/ from this checkout, installed or not."""
    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def _validate_settings(config: SweepConfig) -> None:
    s, c = config.sweep, config.cluster
    if s.scheduler in ("pbt", "pb2"):
        raise ConfigError("sweep.scheduler", f"{s.scheduler} is not offered: population-based training copies "
                          "another trial's weights into a running trial and changes its hyperparameters mid-run, "
                          "so a trial's telemetry would stop being one config's curve from initialisation (trial "
                          "ids name configs; the energy detectors compare each epoch with the trial's own past). "
                          "Use sweep.scheduler=asha to end weak trials early, sweep.search=optuna to choose "
                          "where to sample (README: With your tools)")
    if s.scheduler not in SCHEDULERS:
        raise ConfigError("sweep.scheduler", f"unknown value {s.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
    check_trackers(list(s.tracking), "sweep.tracking")
    if s.search not in SEARCHES:
        raise ConfigError("sweep.search", f"unknown value {s.search!r}; allowed: {', '.join(SEARCHES)}")
    if s.search == "optuna":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise ConfigError("sweep.search", "optuna is not installed: pip install 'energy-at[optuna]'")
    check_stop_on(list(s.stop_on), "sweep.stop_on")
    check_detect(s.detect, "sweep.detect")
    if s.resources.cpus <= 0 or s.resources.gpus < 0:
        raise ConfigError("sweep.resources", "cpus must be > 0 and gpus >= 0")
    if s.resources.gpus > 1 and s.resources.gpus != int(s.resources.gpus):
        raise ConfigError("sweep.resources.gpus", f"got {s.resources.gpus}: use a whole number of GPUs, or a "
                          "fraction below 1 to pack several trials onto one GPU")
    for name, value, low in (("sweep.num_samples", s.num_samples, 1), ("sweep.max_concurrent", s.max_concurrent, 0),
                             ("sweep.max_failures", s.max_failures, 0), ("cluster.timeout_min", c.timeout_min, 1),
                             ("cluster.gpus_per_node", c.gpus_per_node, 0)):
        if value < low:
            raise ConfigError(name, f"must be an integer >= {low}, got {value}"
                              + (" (0: as many as the resources allow)" if name == "sweep.max_concurrent" else ""))
    if c.cpus_per_node is not None and c.cpus_per_node < 1:
        raise ConfigError("cluster.cpus_per_node", f"must be a positive integer, got {c.cpus_per_node}")
    if c.mem_gb is not None and c.mem_gb < 1:
        raise ConfigError("cluster.mem_gb", f"must be a positive integer, got {c.mem_gb}")
    if c.kind not in ("local", "slurm"):
        raise ConfigError("cluster.kind", f"unknown value {c.kind!r}; allowed: local, slurm")
    if c.nodes < 1:
        raise ConfigError("cluster.nodes", f"must be a positive integer, got {c.nodes}")
    if s.resources.gpus > 0 and c.kind == "slurm" and c.gpus_per_node == 0:
        raise ConfigError("cluster.gpus_per_node", "trials ask for GPUs (sweep.resources.gpus > 0): set "
                          "cluster.gpus_per_node")
