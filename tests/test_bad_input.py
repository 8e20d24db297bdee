"""Bad input, generated: every case gets exit 2, one stderr line naming the field, and writes nothing.

Over 100 configurations and command lines of `energy-at train` and `energy-at sweep`: wrong
types, out-of-range values, unknown keys and groups, impossible combinations, unwritable
paths, missing devices and bad sweep grammar. Run in-process (the CLI's own `main`).
"""
from __future__ import annotations

import pytest

from orchestrator.cli import main

SMALL = ["epochs=1", "data.subset=256", "data.val_size=32", "data.probe_size=32", "data.test_size=32",
         "eval.pgd_steps=1"]  # if a case were wrongly accepted, it would train for seconds, not hours

POSITIVE_INTS = ["epochs", "batch_size", "attack.steps", "eval.pgd_steps", "eval.restarts", "eval.batch_size",
                 "telemetry.flush_every", "telemetry.natural_every", "data.subset", "method.sgld_steps",
                 "method.buffer_size", "threads", "data.val_size", "data.test_size"]
POSITIVE_NUMBERS = ["attack.eps", "optim.lr", "method.sgld_step_size", "attack.alpha"]
NON_NEGATIVE = ["method.beta", "method.gamma", "optim.weight_decay", "method.sgld_noise"]

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
    ("data.subset=99999999", "data.subset"), ("data.val_size=99999999", "data.val_size"),
    ("data.test_size=99999999", "data.test_size"), ("data.root=/no/such/dir", "data.root"),
    ("data.subset=256 data.probe_size=512", "data.probe_size"), ("data.probe_size=100000", "data.probe_size"),
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
