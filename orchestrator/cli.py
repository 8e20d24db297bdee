"""`energy-at`: the command line; `USAGE` below lists every command (`COMMANDS` maps each to its function).

train and sweep validate here and hand every trial to orchestrator/runner.py (through multirun.py for
`train -m`, Ray Tune's trainable for `sweep`); the analysis, status, eval and generate commands live
in their own modules."""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Callable

USAGE = """usage: energy-at <command> [args]   (energy-at --version: the installed version)

commands:
  train   [overrides]             run one adversarial-training trial (Hydra overrides, -m for multirun;
                                  --cfg job prints the config, --help the groups, --config-dir DIR adds yours)
  sweep   [overrides]             run many trials through Ray Tune (embedded Ray, or cluster=slurm)
  report  <sweep_dir>...          write the HTML report (plots, events, ranking)
  detect  <sweep_dir>...          print CO/RO/NaN events found in the energy logs
  query   <sweep_dir> "<SQL>"     SQL over the tables batches, epochs, probes, events, trials
  status  <sweep_dir> [--json] [--watch [SECONDS]]
                                  trials (running/interrupted/finished/stopped/...) and the Slurm job
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
    """Validate the overrides, then run one trial here (or a Hydra multirun with -m).

    Hydra's flags: --cfg job|hydra|all prints the composed config and exits, --info shows Hydra's
    view of it, --help lists the config groups, --config-dir DIR (or hydra.searchpath=[file://DIR])
    adds the user's own configs (orchestrator/config.py)."""
    from orchestrator.config import HydraFlags, search_path
    from workloads.config import ConfigError
    from workloads.data import DatasetError

    try:
        flags, overrides = HydraFlags.parse(argv, "train")
        if flags.help:
            with search_path(flags.searchpath):
                print(train_help(overrides))
            return 0
        if flags.cfg or flags.info:
            with search_path(flags.searchpath):
                return _show_train(flags, argv, overrides)
    except ConfigError as e:
        return fail("train", str(e))
    if flags.multirun:
        from orchestrator.multirun import multirun

        try:
            return multirun(argv)
        except ConfigError as e:
            return fail("train", str(e))
    from orchestrator import runner
    from orchestrator.config import compose_trial
    from workloads.config import trial_id
    from workloads.run_dir import CheckpointError, DiskFull, RunDir, succeeded

    made: list[Path] = []  # folders this command created: removed again if the config turns out bad
    try:
        with search_path(flags.searchpath):
            one_trial(overrides, argv)
            cfg = compose_trial(overrides)
        run_dir = RunDir(cfg.out)
        trial_dir = run_dir.trial(trial_id(cfg))
        made = [p for p in (trial_dir, trial_dir.parent, run_dir.root) if not p.exists()]
        summary = runner.run(cfg, progress=sys.stderr.isatty())
    except (DiskFull, CheckpointError) as e:  # the trial failed (result.json says so where it could): one line
        print(f"energy-at train: error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, DatasetError) as e:
        for p in made:  # deepest first: the new trial folder holds only the lock file
            with contextlib.suppress(OSError):
                (p / ".lock").unlink(missing_ok=True)
                p.rmdir()  # only if empty
        return fail("train", str(e))
    return 0 if succeeded(summary) else 1


def one_trial(overrides: list[str], argv: list[str]) -> None:
    """ConfigError with the -m hint if an override is a sweep (a,b / range(...)): one trial takes one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from workloads.config import ConfigError

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return  # Hydra's own message, when composed
    for o in parsed:
        if o.is_sweep_override():
            value = (o.input_line or "").partition("=")[2]
            raise ConfigError(o.get_key_element(), f"{value!r} is several values and one trial takes one; "
                              "comma lists run several trials: add -m "
                              f"(energy-at train -m {shlex.join(a for a in argv if a not in ('-m', '--multirun'))})")


def _show_train(flags, argv: list[str], overrides: list[str]) -> int:
    """--cfg (one YAML document per trial with -m) or --info; validates the trial config(s) first."""
    from orchestrator.config import compose_trial, config_yaml, show_info
    from workloads.config import ConfigError

    if flags.info:
        if flags.multirun:
            raise ConfigError("--info", "shows one trial: drop -m and the comma lists "
                              "(--cfg job -m prints every trial)")
        one_trial(overrides, argv)
        show_info("train", overrides, flags.info, skip=("sweep", "cluster"))
        return 0
    if not flags.multirun:
        one_trial(overrides, argv)
        compose_trial(overrides)  # a bad value: the usual one-line error
        sys.stdout.write(config_yaml("train", overrides, flags.cfg, flags.package, flags.resolve))
        return 0
    from orchestrator.multirun import _split, plan

    hydra_args, trial_args = _split(overrides)
    docs = []
    for i, (trial_overrides, _) in enumerate(plan(trial_args)):
        docs.append(f"# trial {i}: {' '.join(trial_overrides)}\n"
                    + config_yaml("train", [*hydra_args, *trial_overrides], flags.cfg, flags.package, flags.resolve))
    sys.stdout.write("---\n".join(docs))
    return 0


TRAIN_USAGE = ("usage: energy-at train [key=value ...] [-m] [--cfg job|hydra|all [--resolve] [--package PKG]]\n"
               "                       [--info [WHAT]] [--config-dir DIR] [--help]")
FLAGS_HELP = """flags (Hydra's):
  --cfg, -c job|hydra|all  print the composed config (the {what}'s fields | Hydra's | both) as YAML and exit
  --resolve                with --cfg: resolve ${{...}} interpolations
  --package, -p PKG        with --cfg: only this part of the config (e.g. {pkg})
  --info, -i [WHAT]        Hydra's view of the config: all (default), config, defaults, defaults-tree,
                           plugins, searchpath, or groups
  --config-dir, -cd DIR    add DIR to the config search path: DIR/method/mine.yaml is method=mine,
                           DIR/sweep/mine.yaml is sweep=mine (the same: hydra.searchpath=[file://DIR])"""


def _other_fields() -> str:
    """The fields of `train`'s config (orchestrator.config.RunConfig) that no config group sets, for --help."""
    import dataclasses

    from orchestrator.config import RunConfig

    groups = ("method", "attack", "data", "model", "optim", "schedule")
    top, nested = [], []
    for f in dataclasses.fields(RunConfig):
        if f.name in groups:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            nested.append(f"{f.name}.{{{','.join(g.name for g in dataclasses.fields(default))}}}")
        else:
            top.append(f.name)
    return " ".join(top) + "\n  " + " ".join(nested)


def train_help(overrides: list[str]) -> str:
    from orchestrator.config import config_groups, format_groups

    groups = config_groups("train", overrides, skip=("sweep", "cluster"), also=("hydra/launcher",))
    return f"""{TRAIN_USAGE}

Runs one adversarial-training trial here; with -m (--multirun) one trial per point of a grid
(method=fgsm,pgd seed=range(3)), one after another or through hydra/launcher=submitit_slurm.

config groups (GROUP=OPTION; * the current choice; from orchestrator/conf/ and --config-dir):
{format_groups(groups)}

other fields (workloads/config.py; `energy-at train --cfg job` prints every value):
  {_other_fields()}
  and every field of a group: method.beta=3, attack.eps=8/255 (attack.eps, attack.alpha and
  eval.pgd_alpha take fractions), optim.lr=0.01, data.subset=2000

{FLAGS_HELP.format(what="trial", pkg="attack")}
  -m, --multirun           run the grid of comma lists / range(...) as several trials

example:
  energy-at train method=fgsm attack.eps=0.3 epochs=5 data.subset=2000 out=runs/demo"""


def sweep(argv: list[str]) -> int:
    """Plan and validate every trial, then run them through Ray Tune here or as one Slurm job."""
    from orchestrator.config import HydraFlags, search_path
    from workloads.config import ConfigError

    try:
        flags, overrides = HydraFlags.parse(argv, "sweep")
        if flags.multirun:
            raise ConfigError("-m", "a sweep runs many trials already: drop -m")
        if flags.help or flags.cfg or flags.info:
            with search_path(flags.searchpath):
                return _show_sweep(flags, overrides)
        from orchestrator.sweep import SweepPlan

        with search_path(flags.searchpath):
            plan = SweepPlan.from_overrides(overrides)
    except ConfigError as e:
        return fail("sweep", str(e))
    print(plan.describe())
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


SWEEP_USAGE = ("usage: energy-at sweep [trial overrides in Hydra sweep syntax] [sweep.KEY=V]\n"
               "                       [cluster=slurm cluster.KEY=V] [--cfg job|hydra|all [--resolve] [-p PKG]]\n"
               "                       [--info [WHAT]] [--config-dir DIR] [--help]")


def _show_sweep(flags, overrides: list[str]) -> int:
    """--help, --cfg (the sweep config, command-line trial overrides appended to sweep.trial, then the plan:
    every trial validated, as YAML comments) or --info."""
    from orchestrator.config import config_groups, config_yaml, format_groups, show_info, with_fractions
    from orchestrator.sweep import SweepPlan, _is_trial_override

    trial_args = [a for a in overrides if _is_trial_override(a)]
    sweep_args = [a for a in overrides if not _is_trial_override(a)]
    if flags.cfg:
        plan = SweepPlan.from_overrides(overrides, create=False)  # a dry run: validates, runs and writes nothing
        sys.stdout.write(config_yaml("sweep", sweep_args, flags.cfg, flags.package, flags.resolve,
                                     extra_trials=with_fractions(trial_args)))
        planned = plan.describe() + ("" if plan.search else "\n" + plan.table())
        print("\n".join(f"# {line}".rstrip() for line in ["planned, not run:", *planned.splitlines()]))
    elif flags.info:
        show_info("sweep", sweep_args, flags.info)
    else:
        groups = config_groups("sweep", sweep_args) | config_groups("train", skip=("sweep", "cluster"))
        print(f"""{SWEEP_USAGE}

Runs many trials through Ray Tune: on an embedded Ray here (cluster=local) or as one Slurm job
with a Ray cluster inside (cluster=slurm). Trial axes: method=fgsm,pgd seed=range(3)
optim.lr=tag(log,interval(0.01,0.2)) attack.eps=4/255,8/255; settings: sweep.KEY, cluster.KEY.

config groups (GROUP=OPTION; * the current choice; from orchestrator/conf/ and --config-dir):
{format_groups(groups)}

{FLAGS_HELP.format(what="sweep", pkg="sweep")}

example:
  energy-at sweep method=fgsm,pgd seed=0,1,2 attack.eps=0.25 sweep.out=runs/s1""")
    return 0


def finish(plan) -> int:
    """After a sweep: every trial's outcome, the report; exit status 1 naming the trials that did not succeed."""
    from analysis import commands
    from orchestrator import runner
    from workloads.run_dir import RunDir

    run_dir = RunDir(plan.dir)
    ids = ([t.trial_id for t in plan.trials] if plan.trials
           else run_dir.trial_ids())  # a search picked them
    table, bad = runner.outcomes((tid, run_dir.read_result(tid)) for tid in ids)
    print(table)
    if run_dir.tune().exists():  # Tune's own hint above names its temporary staging folder, not where the logs stay
        print(f"Tune's logs (TensorBoard): tensorboard --logdir {run_dir.tune()}")
    rc = commands.report([str(plan.dir)]) if plan.settings.report else 0
    if bad:
        print(f"energy-at sweep: {len(bad)} of {len(ids)} trials did not succeed: {', '.join(bad)} "
              f"(energy-at status {plan.dir})", file=sys.stderr)
        return 1
    return rc


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
    if command == "--version":
        return version()
    if command not in COMMANDS:
        return fail(command, f"unknown command; allowed: {', '.join(COMMANDS)}")
    return COMMANDS[command](rest)


def version() -> int:
    """`energy-at --version`: the installed package's version."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        print(f"energy-at {installed('energy-at')}")
    except PackageNotFoundError:
        return fail("--version", "energy-at is not installed as a package: pip install -e . in the checkout")
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
