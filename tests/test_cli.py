"""The `energy-at` command as a user runs it: a real trial, and bad configs rejected before any work."""
import json
import subprocess
import sys

import pytest


def energy_at(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_train_runs_a_trial_and_prints_a_summary(tmp_path):
    r = energy_at("train", "method=fgsm", "attack.eps=0.3", "epochs=1", "data.subset=256", "data.val_size=64",
                  "data.probe_size=32", "data.test_size=64", "eval.pgd_steps=2", f"out={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "status     finished" in r.stdout and "PGD-2" in r.stdout
    result = json.loads(next(tmp_path.glob("trials/*/result.json")).read_text())
    # the trial's result is its best-val checkpoint: the summary's test line; the last model's follows
    assert f"clean {result['best_test_acc_nat']:.3f}   PGD-2 {result['best_test_acc_pgd']:.3f}   best.pt, epoch 1" in r.stdout
    assert f"clean {result['test_acc_nat']:.3f}   PGD-2 {result['test_acc_pgd']:.3f}   last model, epoch 1" in r.stdout
    assert str(tmp_path) in r.stdout
    assert list(tmp_path.glob("batches/fgsm-*/part-*.parquet"))
    assert not {"tracking", "mlflow.db", "tensorboard", "wandb"} & {p.name for p in tmp_path.iterdir()}  # none asked for


@pytest.mark.parametrize("override, field, hint", [
    ("method=foo", "method", "allowed: der, erm, fgsm"),
    ("method.name=foo", "method.name", "allowed: der, erm, fgsm"),
    ("data=imagenet", "data", "allowed: cifar10, cifar100, fashion_mnist"),
    ("attack.eps=-0.1", "attack.eps", "must be a positive number"),
    ("attack.eps=abc", "attack.eps", "could not be converted"),
    ("data.root=/no/such/dir", "data.root", "no such directory"),
    ("model=vit", "model", "allowed: preact_resnet18"),
    ("epochs=0", "epochs", "positive integer"),
    ("attack.epz=0.1", "attack.epz", "unknown key; did you mean attack.eps? allowed: alpha, eps, name, noise, steps"),
    ("optim.name=adamw", "optim.name", "allowed: adam, sgd"),
    ("optim=lion", "optim", "allowed: adam, sgd"),
    ("compile=fast", "compile", "allowed: default, max-autotune"),
    ("compile=reduce-overhead device=cpu", "compile", "needs device=cuda"),
    ("telemetry.natural_every=0", "telemetry.natural_every", "positive integer"),
    ("detect.ro.pattience=20", "detect.ro.pattience", "did you mean detect.ro.patience?"),
    ("detect.ro.patience=soon", "detect.ro.patience", "could not be converted to Integer"),
    ("detect.ro.energy=logits", "detect.ro.energy", "allowed: gap, held_out"),
    ("detect.ro.fall_z=null", "detect.ro", "set one, e.g. detect.ro.patience=10"),
    ("detect.ro.fall_z=0", "detect.ro.fall_z", "positive number of standard errors"),
    ("detect.ro.fall_epochs=0", "detect.ro.fall_epochs", "positive integer"),
])
def test_bad_config_gets_one_clear_line_and_exit_2(tmp_path, override, field, hint):
    r = energy_at("train", *override.split(), f"out={tmp_path}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"energy-at train: error: {field}:") and hint in lines[0], lines[0]
    assert not any(tmp_path.iterdir())  # nothing was started


def test_missing_dataset_names_path_files_and_how_to_get_them(tmp_path):
    r = energy_at("train", "data=cifar10", f"data.root={tmp_path}", f"out={tmp_path}/out")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert str(tmp_path) in r.stderr and "data_batch_1" in r.stderr and "cifar-10-python.tar.gz" in r.stderr


def test_unknown_command():
    r = energy_at("trian")
    assert r.returncode == 2 and "allowed: train" in r.stderr
