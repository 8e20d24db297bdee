"""Bad input, generated: every case gets exit 2, one stderr line naming the field, and writes nothing.

Over 100 configurations and command lines of `energy-at train` and `energy-at sweep`: wrong
types, out-of-range values, unknown keys and groups, impossible combinations, unwritable
paths, missing devices and bad sweep grammar. Run in-process (the CLI's own `main`); the errors
that name their fix (the nearest key, the bracket form, the sweep. setting) through the real CLI.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from importlib.metadata import version

import pytest

from orchestrator.cli import main

SMALL = ["epochs=1", "data.subset=256", "data.val_size=32", "data.probe_size=32", "data.test_size=32",
         "eval.pgd_steps=1"]  # if a case were wrongly accepted, it would train for seconds, not hours

POSITIVE_INTS = ["epochs", "batch_size", "attack.steps", "eval.pgd_steps", "eval.restarts", "eval.batch_size",
                 "telemetry.flush_every", "telemetry.natural_every", "data.subset", "method.sgld_steps",
                 "method.buffer_size", "threads", "data.val_size", "data.test_size"]
POSITIVE_NUMBERS = ["attack.eps", "optim.lr", "method.sgld_step_size", "attack.alpha", "eval.pgd_alpha"]
NON_NEGATIVE = ["method.beta", "method.gamma", "optim.weight_decay", "method.sgld_noise", "attack.noise",
                "schedule.factor"]

TRAIN: list[tuple[str, str]] = []  # (override, the field its error must name)
for f in POSITIVE_INTS:
    TRAIN += [(f"{f}=-2", f), (f"{f}=abc", f), (f"{f}=1.5", f)]
    if f not in ("data.val_size", "data.test_size"):
        TRAIN.append((f"{f}=0", f))
for f in POSITIVE_NUMBERS:
    TRAIN += [(f"{f}=-0.1", f), (f"{f}=abc", f), (f"{f}=0", f)]
for f in NON_NEGATIVE:
    TRAIN += [(f"{f}=-1", f), (f"{f}=xyz", f)]
TRAIN += [
    ("attack.eps=1.5", "attack.eps"), ("optim.momentum=2", "optim.momentum"), ("optim.momentum=-0.5", "optim.momentum"),
    ("method.reinit=1.5", "method.reinit"), ("optim.betas=[0.9,1.2]", "optim.betas"), ("optim.betas=[0.9]", "optim.betas"),
    ("schedule.milestones=[100,150]", "schedule.milestones"),
    ("data.subset=99999999", "data.subset"), ("data.val_size=99999999", "data.val_size"),
    ("data.test_size=99999999", "data.test_size"), ("data.root=/no/such/dir", "data.root"),
    ("data.subset=256 data.probe_size=512", "data.probe_size"), ("data.probe_size=100000", "data.probe_size"),
    ("data.val_size=60000", "data.val_size"), ("seed=-1", "seed"), ("schedule.peak=1", "schedule.peak"),
    ("schedule.pct_start=0", "schedule.pct_start"), ("cluster.nodes=2", "cluster.nodes: a setting of energy-at sweep"),
    # unknown keys and groups
    ("foo=1", "foo"), ("attack.epz=0.1", "attack.epz"), ("optim.lrr=0.1", "optim.lrr"), ("data.size=3", "data.size"),
    ("method=foo", "method"), ("data=imagenet", "data"), ("model=vit", "model"), ("optim=lion", "optim"),
    ("schedule=cosine", "schedule"), ("attack=l2", "attack"), ("method.name=foo", "method.name"),
    ("schedule.name=cosine", "schedule.name"), ("attack.name=cw", "attack.name"), ("optim.name=adamw", "optim.name"),
    # impossible combinations, devices, paths
    ("compile=reduce-overhead device=cpu", "compile"), ("compile=max-autotune device=cpu", "compile"),
    ("compile=fast", "compile"), ("precision=fp16", "precision"), ("device=tpu", "device"), ("device=cuda", "device"),
    ("device=cuda:3", "device"), ("method=der method.base=trades", "method.base"), ("stop_on=[foo]", "stop_on"),
    ("tracking=[foo]", "tracking"), ("tracking=[mlflow,neptune]", "tracking"), ("tracking=mlflow", "tracking"),
    ("out=/proc/energy-at/x", "out"), ("out=/dev/null/x", "out"), ("trial_id=a/b", "trial_id"), ("trial_id='a b'", "trial_id"),
    # grammar
    ("method=fgsm,pgd", "method"), ("epochs=", "epochs"),
]
SWEEP: list[tuple[str, str]] = [
    ("sweep.scheduler=pbt2", "sweep.scheduler"), ("sweep.num_samples=0", "sweep.num_samples"),
    ("sweep.max_concurrent=-1", "sweep.max_concurrent"), ("sweep.max_failures=-1", "sweep.max_failures"),
    ("sweep.resources.cpus=0", "sweep.resources"), ("sweep.resources.gpus=-1", "sweep.resources"),
    ("sweep.resources.gpus=1.5", "sweep.resources.gpus"), ("sweep.resources.gpus=1", "sweep.resources.gpus"),
    ("cluster.kind=k8s", "cluster.kind"), ("cluster.nodes=0", "cluster.nodes"),
    ("cluster.timeout_min=0", "cluster.timeout_min"), ("cluster.cpus_per_node=0", "cluster.cpus_per_node"),
    ("sweep.stop_on=[foo]", "sweep.stop_on"), ("sweep.out=/proc/energy-at/x", "sweep.out"),
    ("optim.lr=tag(log,interval(-1,0.1))", "optim.lr"), ("optim.lr=interval(0.2,0.1)", "optim.lr"),
    ("out=runs/x", "out"), ("foo.bar=1", "foo.bar"), ("sweep.foo=1", "sweep.foo"), ("cluster.foo=1", "cluster.foo"),
    ("method=fgsm,foo", "method"), ("attack.eps=0.1,-0.2", "attack.eps"), ("seed=range(", "override"),
    ("epochs=0,1", "epochs"), ("optim.momentum=0.9,3", "optim.momentum"), ("device=cuda", "device"),
    ("seed=range(0,0)", "seed"), ("sweep.search=optuna seed=range(2,1)", "seed"), ("trial_id=x", "trial_id"),
]


def _check(capsys, tmp_path, argv: list[str], field: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert field in err, (field, err)
    assert not (tmp_path / "out").exists(), "a rejected command wrote to its out folder"


@pytest.mark.parametrize("override, field", TRAIN, ids=[o for o, _ in TRAIN])
def test_bad_train_input(capsys, tmp_path, override: str, field: str) -> None:
    out = [] if override.startswith("out=") else [f"out={tmp_path / 'out'}"]
    _check(capsys, tmp_path, ["train", *SMALL, *out, *override.split()], field)


@pytest.mark.parametrize("override, field", SWEEP, ids=[o for o, _ in SWEEP])
def test_bad_sweep_input(capsys, tmp_path, override: str, field: str) -> None:
    out = [] if "out=" in override else [f"sweep.out={tmp_path / 'out'}"]
    _check(capsys, tmp_path, ["sweep", "sweep=smoke", *out, *override.split()], field)


def test_there_are_over_a_hundred_cases() -> None:
    assert len(TRAIN) + len(SWEEP) >= 100


def test_train_m_refuses_a_grid_point_that_repeats_another(capsys, tmp_path) -> None:
    # FGSM reads no method.beta: both grid points are one trial, which two Hydra jobs would share
    argv = ["train", "-m", *SMALL, f"out={tmp_path / 'out'}", "method=fgsm", "method.beta=1,6"]
    _check(capsys, tmp_path, argv, "trial 1")
    rc = main(["train", "-m", "--cfg", "job", *SMALL, f"out={tmp_path / 'out'}", "method=trades", "method.beta=1,6"])
    assert rc == 0, capsys.readouterr().err  # TRADES reads beta: two trials


def _list_fields(schema: type, prefix: str = "") -> list[str]:
    """The list-typed fields of a config dataclass and of the dataclasses in it, as dotted keys."""
    hints = typing.get_type_hints(schema)
    found = []
    for f in dataclasses.fields(schema):
        if typing.get_origin(hints[f.name]) is list:
            found.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            found += _list_fields(hints[f.name], f"{prefix}{f.name}.")
    return found


def _all_list_fields() -> list[tuple[str, str]]:
    from orchestrator.config import RunConfig  # train's config: the trial's fields and the run's (stop_on, tracking)
    from orchestrator.sweep import SweepConfig

    return [("train", k) for k in _list_fields(RunConfig)] + [("sweep", k) for k in _list_fields(SweepConfig)]


@pytest.mark.parametrize("command, key", _all_list_fields(), ids=lambda x: x)
def test_a_single_value_for_a_list_field_gets_its_bracket_form(capsys, tmp_path, command, key) -> None:
    out = f"out={tmp_path / 'out'}" if command == "train" else f"sweep.out={tmp_path / 'out'}"
    _check(capsys, tmp_path, [command, "--cfg", "job", out, f"{key}=x"], f"{key}: a list; write {key}=[x]")


# --- through the real CLI -------------------------------------------------------------------------------------
def energy_at(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=300)


def error_line(command: str, *args: str) -> str:
    """The one stderr line of a refused `energy-at <command> args` (exit 2, the command's prefix)."""
    r = energy_at(command, *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    assert lines[0].startswith(f"energy-at {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("command, args, fix", [
    ("train", ["attack.epsilon=0.3"],
     "attack.epsilon: unknown key; did you mean attack.eps? allowed: alpha, eps, name, noise, steps"),
    ("sweep", ["sweep.outt=runs/x"], "sweep.outt: unknown key; did you mean sweep.out? allowed: "),
    ("train", ["tracking=mlflow"], "tracking: a list; write tracking=[mlflow]"),
    ("train", ["optim.betas=0.9"], "optim.betas: a list; write optim.betas=[0.9]"),
    ("sweep", ["sweep.stop_on=nan"], "sweep.stop_on: a list; write sweep.stop_on=[nan]"),
    ("sweep", ["stop_on=[]"], "stop_on: not a trial field nor a sweep./cluster. setting; did you mean sweep.stop_on=[]?"),
    ("sweep", ["scheduler=asha"], "did you mean sweep.scheduler=asha?"),
    ("train", ["sweep.stop_on=[]"], "sweep.stop_on: a setting of energy-at sweep, not of one trial; did you mean stop_on?"),
    ("train", ["data.probe_size=100000000"], "data.probe_size: 100000000 is more than the 59000 training images of "
                                             "fashion_mnist left after data.val_size=1000; pass data.probe_size=59000"),
    ("train", ["attack.noise=-1"], "attack.noise: must be a non-negative number, got -1.0"),
    ("sweep", ["seed=range(0,0)"], "seed: range(0,0) has no values, so no trial would run"),
    ("eval", ["--eps", "8/0", "runs/nope"], "--eps: '8/0' divides by zero; write e.g. --eps=8/255"),
], ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_the_error_names_the_fix(tmp_path, command: str, args: list[str], fix: str) -> None:
    out = {"train": [f"out={tmp_path / 'out'}"], "sweep": [f"sweep.out={tmp_path / 'out'}"]}.get(command, [])
    assert fix in error_line(command, *args, *out)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, args", [
    ("train", ["foo=1"]), ("sweep", ["foo=1"]), ("detect", ["NOPE"]), ("query", ["NOPE", "SELECT 1"]),
    ("report", ["NOPE"]), ("eval", ["NOPE"]), ("generate", ["NOPE"]), ("status", ["NOPE"]), ("cancel", ["NOPE"]),
    ("detect", []), ("query", ["NOPE"]), ("report", ["--bogus", "NOPE"]), ("eval", []), ("generate", []),
    ("status", []), ("cancel", []),
], ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_every_command_errs_with_one_prefixed_line(tmp_path, command: str, args: list[str]) -> None:
    error_line(command, *(str(tmp_path / "nope") if a == "NOPE" else a for a in args))


def test_eval_takes_eps_and_alpha_as_fractions(tmp_path) -> None:
    line = error_line("eval", "--eps", "8/255", "--alpha", "2/255", str(tmp_path / "nope"))
    assert "--eps" not in line and "--alpha" not in line and str(tmp_path / "nope") in line, line


def test_version() -> None:
    r = energy_at("--version")
    assert r.returncode == 0 and r.stdout == f"energy-at {version('energy-at')}\n", r
