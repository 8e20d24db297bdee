"""`energy-at train -m ...`: a Hydra multirun, every trial its own job, no Ray.

    energy-at train -m method=fgsm,pgd seed=0,1 out=runs/grid                      # one after another, here
    energy-at train -m method=fgsm,pgd seed=0,1 hydra/launcher=submitit_local ...   # local processes
    energy-at train -m method=fgsm,pgd seed=0,1 out=runs/grid \\
        hydra/launcher=submitit_slurm hydra.launcher.partition=debug hydra.launcher.timeout_min=60

Before anything is launched the grid is expanded (`orchestrator.space.expand`, the same
syntax as `energy-at sweep`) and every trial is composed and validated; a bad value is one
line naming the trial and the field, exit 2, and nothing is submitted. Each job then runs
`Trial(...).run()` and writes the usual Parquet layout under `out`, so `energy-at report <out>`
works on a multirun as on a sweep.

A trial that raises inside a job keeps its logs (its buffered telemetry is flushed, its
result.json says `failed` with the exception) and fails its job: with the submitit launchers
the job exits 1 (Slurm state FAILED) with the traceback in its log
(`<out>/hydra/multirun-<time>/.submitit/<jobid>/`); the other jobs still run, Hydra reports the
exception once all are done, and `energy-at train -m` exits 1 after listing every trial's
outcome. Each Slurm job records itself in `<out>/slurm/jobs/<jobid>.json` for
`energy-at status <out>` and `energy-at cancel <out>`.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from orchestrator import runner
from orchestrator.config import RUN_FIELDS, HydraFlags, compose_trial, search_path, validated, with_fractions
from workloads.config import ConfigError, TrialConfig, trial_id
from workloads.run_dir import RunDir, write_json

VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-p", "--package",
               "-i", "--info"}
# --- the Hydra task: one trial ------------------------------------------------------------------------
def task(cfg: DictConfig) -> dict:
    """Run one trial from its Hydra job config (orchestrator/runner.py); a crash fails the submitit job."""
    trial_cfg = validated(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    _record_job(trial_cfg)
    try:
        return runner.run(trial_cfg)
    except Exception:
        if "SUBMITIT_FOLDER" in os.environ:  # a submitit job (Slurm or local)
            traceback.print_exc()  # the job's own log shows why
            atexit.register(_exit_failed)  # and the job ends FAILED (see _exit_failed)
        raise


main = hydra.main(config_path="conf", config_name="train", version_base=None)(task)


def _exit_failed() -> None:
    """Exit code 1 for a submitit job whose trial raised.

    Hydra's `run_job` turns the task's exception into a FAILED JobReturn, which submitit stores
    as the job's (successful) result: without this the Slurm job would end COMPLETED. Run at
    interpreter exit, after submitit wrote that result, so the driver still collects every job
    and Hydra still reports the trial's exception; only the exit status changes.
    """
    print("energy-at: the trial of this job failed (traceback above): exit status 1", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(1)


def _record_job(cfg: TrialConfig) -> None:
    """In a Slurm job: <out>/slurm/jobs/<jobid>.json, so `energy-at status|cancel <out>` find it."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or "SUBMITIT_FOLDER" not in os.environ:
        return
    array, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array}_{task_id}" if array and task_id else job
    record = {"job_id": job_id, "array_job_id": array, "trial": trial_id(cfg),
              "folder": os.environ["SUBMITIT_FOLDER"].replace("%j", job_id), "started": time.time(),
              "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}
    try:
        write_json(RunDir(cfg.out).slurm("jobs", f"{job_id}.json"), record)
    except OSError as e:
        print(f"energy-at: could not record Slurm job {job_id}: {e}", file=sys.stderr)


# --- the command ----------------------------------------------------------------------------------
def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's own flags and hydra.* / hydra/... overrides, trial overrides)."""
    hydra_args, trial_args = [], []
    it = iter(a for a in argv if a not in ("-m", "--multirun"))
    for a in it:
        if a.startswith("-"):
            hydra_args.append(a)
            if a in VALUE_FLAGS:
                hydra_args.append(next(it, ""))
            continue
        key = a.lstrip("+~").split("=", 1)[0]
        (hydra_args if key == "hydra" or key.startswith(("hydra.", "hydra/")) else trial_args).append(a)
    return hydra_args, trial_args


def plan(trial_args: list[str]) -> list[tuple[list[str], TrialConfig]]:
    """Expand the grid and validate every trial; ConfigError names the trial and the field."""
    from orchestrator.space import expand, parse
    from hydra.core.override_parser.types import IntervalSweep

    for o in parse(trial_args):
        if isinstance(o.value(), IntervalSweep):
            raise ConfigError(o.get_key_element(), "interval(...) is random search: use `energy-at sweep` "
                              "(sweep.num_samples); `train -m` takes grid axes (a,b,c / range(...))")
    trials = []
    for i, overrides in enumerate(expand(trial_args)):
        try:
            cfg = compose_trial(overrides)
        except ConfigError as e:
            raise ConfigError(f"trial {i} ({' '.join(overrides)})", str(e)) from None
        trials.append((overrides, cfg))
    seen: dict[str, int] = {}
    for i, (overrides, cfg) in enumerate(trials):  # Hydra launches every grid point: two would share a folder
        j = seen.setdefault(trial_id(cfg), i)
        if j != i:
            differ = [o.lstrip("+~").split("=", 1)[0] for o in overrides if o not in trials[j][0]]
            if differ and all(key.split(".", 1)[0] in RUN_FIELDS for key in differ):
                raise ConfigError(f"trial {i} ({' '.join(overrides)})",
                                  f"is trial {j} again (same id {trial_id(cfg)}): {', '.join(differ)} is how the run "
                                  "is watched, not what the trial computes; to compare stop settings, train once "
                                  "with stop_on=[] and replay its logs: energy-at detect OUT --set KIND.SETTING=VALUE")
            raise ConfigError(f"trial {i} ({' '.join(overrides)})",
                              f"is trial {j} again (same id {trial_id(cfg)}: its method reads none of the fields "
                              "that differ); drop the repeated values from the grid")
    return trials


def _launcher(hydra_args: list[str]) -> str:
    for a in hydra_args:
        key, _, value = a.lstrip("+~").partition("=")
        if key == "hydra/launcher":
            return value
    return "basic"


def multirun(argv: list[str]) -> int:
    """`energy-at train -m [overrides]`: validate every trial (ConfigError before anything runs), then run
    them through Hydra's launcher; exit status 1 if a trial did not succeed."""
    hydra_args, trial_args = _split(argv)
    flags, _ = HydraFlags.parse(argv, "train")  # the user config dirs, for validating every trial
    trial_args = with_fractions(trial_args)  # attack.eps=8/255 as a number, also for Hydra's own run
    with search_path(flags.searchpath):
        trials = plan(trial_args)
    launcher = _launcher(hydra_args)
    outs = sorted({str(Path(c.out).resolve()) for _, c in trials})
    print(f"multirun: {len(trials)} trials -> {', '.join(outs)} (launcher {launcher})", flush=True)
    saved = sys.argv
    sys.argv = ["energy-at", "--multirun", *hydra_args, *trial_args]
    try:
        main()
        rc = 0
    except SystemExit as e:  # Hydra exits 1 after printing a failed job's error
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    table, bad = runner.outcomes((trial_id(c), RunDir(c.out).read_result(trial_id(c))) for _, c in trials)
    print(table)
    if bad or rc:
        print(f"energy-at train -m: {len(bad)} of {len(trials)} trials did not succeed: {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0
