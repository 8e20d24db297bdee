"""`energy-at`: the command line.

    energy-at train [overrides]          one trial (Hydra overrides; -m for a multirun)
    energy-at report|query|detect ...    analysis of sweep directories
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable

USAGE = """usage: energy-at <command> [args]

commands:
  train   [overrides]             run one adversarial-training trial (Hydra overrides, -m for multirun)
  sweep   [overrides]             run many trials through Ray Tune (embedded Ray, or cluster=slurm)
  report  <sweep_dir>...          write the HTML report (plots, events, ranking)
  detect  <sweep_dir>...          print CO/RO/NaN events found in the energy logs
  query   <sweep_dir> "<SQL>"     SQL over the tables batches, epochs, probes, events, trials
  status  <sweep_dir> [--json]    trials (running/finished/stopped/diverged/failed) and the Slurm job
  cancel  <sweep_dir>             scancel the sweep's Slurm job(s)
  eval    <ckpt|trial|sweep_dir>  clean / PGD / AutoAttack accuracy (+ --energies) -> evals table
  generate <ckpt|trial_dir>       class-conditional SGLD samples, image grid (+ --metrics IS/FID/KID, Fisher)
"""


def fail(command: str, message: str) -> int:
    print(f"energy-at {command}: error: {message}", file=sys.stderr)
    return 2


def _analysis(name: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        from analysis import commands

        return getattr(commands, name)(argv)

    return run


def train(argv: list[str]) -> int:
    """Validate the overrides, then run one trial here (or a Hydra multirun with -m)."""
    from workloads.config import ConfigError
    from workloads.data import DatasetError

    if {"-m", "--multirun"} & set(argv):
        from orchestrator.multirun import multirun

        return multirun(argv)
    if {"-h", "--help"} & set(argv):
        print("usage: energy-at train [key=value ...]\n\n"
              "Config groups: method, data, model, attack, optim, schedule (orchestrator/conf/);\n"
              "fields: workloads/config.py. Example:\n"
              "  energy-at train method=fgsm attack.eps=0.3 epochs=5 data.subset=2000 out=runs/demo")
        return 0
    from orchestrator.config import compose_trial

    from workloads.config import trial_id
    from workloads.run_dir import RunDir

    made: list[Path] = []  # folders this command created: removed again if the config turns out bad
    with contextlib.ExitStack() as held:
        try:
            cfg = compose_trial(argv)
            run_dir = RunDir(cfg.out)
            trial_dir = run_dir.trial(trial_id(cfg))
            made = [p for p in (trial_dir, trial_dir.parent, run_dir.root) if not p.exists()]
            run_dir.create()
            held.enter_context(run_dir.lock(trial_dir))  # one writer per trial, before it resumes
            from workloads.trial import Trial

            trial = Trial(cfg)
        except (ConfigError, DatasetError) as e:
            held.close()
            for p in made:  # deepest first: the new trial folder holds only the lock file
                with contextlib.suppress(OSError):
                    (p / ".lock").unlink(missing_ok=True)
                    p.rmdir()  # only if empty
            return fail("train", str(e))
        return _train(trial, cfg)


def _train(trial, cfg) -> int:
    print(f"trial {trial.id}: {cfg.method.name} (attack {trial.attack}, eps {cfg.attack.eps:g}) on "
          f"{cfg.data.name} [{len(trial.data.train)} train / {len(trial.data.val)} val], {trial.device}"
          + (f", resuming at epoch {trial.epoch}" if trial.resumed else ""))
    from orchestrator.stopper import stop_rule

    summary = trial.run(stop=stop_rule(cfg), progress=sys.stderr.isatty())
    print(format_summary(summary, trial))
    return 0 if summary["status"] in ("finished", "stopped") else 1


def format_summary(s: dict, trial) -> str:
    lines = [f"status     {s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""),
             f"epochs     {s['epochs_done']}   steps {s['steps_done']}   {s.get('seconds', 0):.1f} s"]
    if "test_acc_nat" in s:
        lines.append(f"test       clean {s['test_acc_nat']:.3f}   PGD-{trial.cfg.eval.pgd_steps} "
                     f"{s['test_acc_pgd']:.3f}   (n={s['test_n']}, eps {trial.cfg.attack.eps:g})")
    lines.append(f"best val   PGD {s['best_val_acc_pgd']:.3f} at epoch {s['best_epoch']}")
    lines.append(f"logs       {trial.out}/{{batches,epochs,probes}}/{trial.id}/")
    lines.append(f"checkpoint {trial.checkpoint_dir}/last.pt")
    return "\n".join(lines)


def sweep(argv: list[str]) -> int:
    """Plan and validate every trial, then run them through Ray Tune here or as one Slurm job."""
    from workloads.config import ConfigError

    if {"-h", "--help"} & set(argv):
        print("usage: energy-at sweep [trial overrides in Hydra sweep syntax] [sweep.KEY=V] [cluster=slurm cluster.KEY=V]\n"
              "  e.g. energy-at sweep method=fgsm,pgd seed=0,1,2 attack.eps=0.25 sweep.out=runs/s1\n"
              "presets: sweep=default|smoke (orchestrator/conf/sweep/), clusters: cluster=local|slurm")
        return 0
    from orchestrator.sweep import SweepPlan

    try:
        plan = SweepPlan.from_overrides(argv)
    except ConfigError as e:
        return fail("sweep", str(e))
    s = plan.settings
    print(f"sweep {s.name}: {len(plan.trials)} trials -> {plan.dir}  (scheduler {s.scheduler}, "
          f"energy stopper {'on: ' + ','.join(s.stop_on) if s.stop_on else 'off'}, cluster {plan.cluster.kind})")
    if plan.cluster.kind == "slurm":
        from cluster.slurm import SubmitError

        try:
            job = plan.submit_slurm()
        except SubmitError as e:
            return fail("sweep", str(e))
        print(f"submitted Slurm job {job.job_id}; logs: {job.paths.stdout.parent}\n"
              f"follow with: energy-at status {plan.dir}")
        return 0
    from workloads.run_dir import RunDir

    try:
        with RunDir(plan.dir).lock():  # one driver per sweep directory
            plan.run_here()
    except ConfigError as e:  # what only the machine running the sweep can check (its GPUs), a held lock
        return fail("sweep", str(e))
    return finish(plan)


def finish(plan) -> int:
    """After a sweep: print trial outcomes and write the report."""
    from analysis import commands

    if plan.settings.report:
        return commands.report([str(plan.dir)])
    return 0


def _status(name: str) -> Callable[[list[str]], int]:
    """`energy-at status|cancel` (orchestrator/status.py)."""
    def run(argv: list[str]) -> int:
        from orchestrator import status

        return getattr(status, name)(argv)

    return run


def evaluate(argv: list[str]) -> int:
    """`energy-at eval` (workloads/evaluation/cli.py)."""
    from workloads.evaluation.cli import main as run

    return run(argv)


def generate(argv: list[str]) -> int:
    """`energy-at generate` (workloads/generation/cli.py)."""
    from workloads.generation.cli import main as run

    return run(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train,
    "sweep": sweep,
    "report": _analysis("report"),
    "detect": _analysis("detect"),
    "query": _analysis("query"),
    "status": _status("status"),
    "cancel": _status("cancel"),
    "eval": evaluate,
    "generate": generate,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(command, f"unknown command; allowed: {', '.join(COMMANDS)}")
    return COMMANDS[command](rest)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
