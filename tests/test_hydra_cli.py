"""Hydra's conventions on `energy-at train` and `energy-at sweep`, run in-process (the CLI's own `main`):
--cfg, --help, --info, user config dirs, eps as a fraction, and the -m hint."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

CONF = Path(__file__).resolve().parents[1] / "orchestrator" / "conf"
TINY = ["epochs=1", "batch_size=64", "data.subset=256", "data.val_size=64", "data.probe_size=32",
        "data.test_size=64", "eval.pgd_steps=2", "threads=1", "device=cpu"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(capsys, *argv: str) -> str:
    rc, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    return lines[0]


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user's own config dir: a method and a sweep preset that orchestrator/conf does not have."""
    d = tmp_path / "myconf"
    (d / "method").mkdir(parents=True)
    (d / "method" / "mine.yaml").write_text("name: trades\nbeta: 2.5\n")  # TRADES reads beta
    (d / "sweep").mkdir()
    (d / "sweep" / "mysweep.yaml").write_text("name: mysweep\nout: runs/mysweep\ntrial:\n  - method=fgsm,mine\n"
                                              "  - attack.eps=8/255\n")
    return d


def test_cfg_job_prints_the_composed_config_and_runs_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    rc, text, err = run(capsys, "train", "--cfg", "job", "method=pgd", "epochs=3", f"out={out}")
    assert rc == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["epochs"] == 3 and cfg["method"]["name"] == "pgd" and cfg["out"] == str(out)
    assert "hydra" not in cfg and cfg["optim"]["name"] == "sgd"
    assert not out.exists()  # nothing ran, nothing was written
    rc, text, _ = run(capsys, "train", "-c", "hydra")
    assert rc == 0 and list(yaml.safe_load(text)) == ["hydra"]
    rc, text, _ = run(capsys, "train", "--cfg=all", "method=trades")
    both = yaml.safe_load(text)
    assert rc == 0 and "hydra" in both and both["method"]["name"] == "trades"
    assert both["hydra"]["runtime"]["choices"]["method"] == "trades"
    rc, text, _ = run(capsys, "train", "--cfg", "job", "--package", "attack", "attack=linf_cifar")
    assert rc == 0 and text.startswith("# @package attack") and yaml.safe_load(text)["eps"] == pytest.approx(8 / 255)


def test_cfg_job_with_m_prints_every_trial(capsys):
    rc, text, err = run(capsys, "train", "-m", "--cfg", "job", "method=fgsm,pgd", "seed=0,1")
    assert rc == 0, err
    docs = list(yaml.safe_load_all(text))
    assert [(d["method"]["name"], d["seed"]) for d in docs] == [("fgsm", 0), ("fgsm", 1), ("pgd", 0), ("pgd", 1)]


def test_help_lists_every_config_group_and_option(capsys):
    rc, text, _ = run(capsys, "train", "--help")
    assert rc == 0
    lines = {ln.split(":")[0].strip(): ln for ln in text.splitlines() if ln.startswith("  ") and ":" in ln}
    for group in ("method", "data", "model", "attack", "optim", "schedule"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert options and lines[group].split(":", 1)[1].replace("*", "").split() == options, group
    assert "fgsm*" in lines["method"] and "fashion_mnist*" in lines["data"]  # the defaults of train.yaml
    assert "submitit_slurm" in lines["hydra/launcher"]
    assert "sweep" not in lines and "--config-dir" in text and "--cfg" in text
    rc, text, _ = run(capsys, "sweep", "-h")
    assert rc == 0 and "default* smoke" in text and "local* slurm" in text and "fgsm*" in text


def test_user_config_dir_makes_its_configs_selectable(capsys, tmp_path, user_dir):
    rc, text, err = run(capsys, "train", "--config-dir", str(user_dir), "method=mine", "--cfg", "job")
    assert rc == 0, err
    method = yaml.safe_load(text)["method"]
    assert method["name"] == "trades" and method["beta"] == 2.5
    rc, text, err = run(capsys, "train", f"hydra.searchpath=[file://{user_dir}]", "method=mine", "-c", "job")
    assert rc == 0 and yaml.safe_load(text)["method"]["beta"] == 2.5, err
    rc, text, _ = run(capsys, "train", "-cd", str(user_dir), "--help")
    assert rc == 0 and " mine " in next(ln for ln in text.splitlines() if ln.strip().startswith("method:"))
    assert "method: unknown value 'mine'" in one_error_line(capsys, "train", "method=mine", "--cfg", "job")
    # a grid over the user's method and a built-in one, each trial validated with the user's dir
    rc, text, err = run(capsys, "train", "-m", "-cd", str(user_dir), "method=mine,fgsm", "--cfg", "job")
    assert rc == 0, err
    assert [(d["method"]["name"], d["method"]["beta"]) for d in yaml.safe_load_all(text)] == [("trades", 2.5),
                                                                                            ("fgsm", 6.0)]
    # the user's sweep preset
    rc, text, err = run(capsys, "sweep", "--config-dir", str(user_dir), "sweep=mysweep", "seed=0,1", "--cfg", "job")
    assert rc == 0, err
    s = yaml.safe_load(text)["sweep"]
    assert s["name"] == "mysweep" and s["trial"][:2] == ["method=fgsm,mine", "attack.eps=8/255"]
    assert s["trial"][-1] == "seed=0,1"  # command-line axes are appended to the preset's
    assert "--config-dir: no such directory" in one_error_line(capsys, "train", "--config-dir", str(tmp_path / "no"))


def test_user_method_is_what_a_real_trial_trains(capsys, tmp_path, user_dir):
    out = tmp_path / "out"
    rc, text, err = run(capsys, "train", "--config-dir", str(user_dir), "method=mine", *TINY, f"out={out}")
    assert rc == 0, err
    assert "status     finished" in text
    (config,) = out.glob("trials/trial=*/config.json")
    saved = json.loads(config.read_text())
    assert saved["method.name"] == "trades" and saved["method.beta"] == 2.5


def test_eps_and_alpha_as_fractions(capsys):
    rc, text, err = run(capsys, "train", "--cfg", "job", "attack.eps=8/255", "attack.alpha=2/255",
                        "eval.pgd_alpha=1/255")
    assert rc == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["attack"]["eps"] == pytest.approx(0.0313725490196) == 8 / 255
    assert cfg["attack"]["alpha"] == 2 / 255 and cfg["eval"]["pgd_alpha"] == 1 / 255
    rc, text, err = run(capsys, "train", "-m", "--cfg", "job", "-p", "attack.eps", "attack.eps=4/255,8/255")
    assert rc == 0, err
    assert [float(v) for v in yaml.safe_load_all(text)] == [4 / 255, 8 / 255]
    rc, text, err = run(capsys, "sweep", "sweep=smoke", "attack.eps=8/255", "--cfg", "job")
    assert rc == 0 and f"attack.eps={8 / 255!r}" in yaml.safe_load(text)["sweep"]["trial"], err


@pytest.mark.parametrize("override, field", [
    ("attack.eps=8/0", "attack.eps"), ("attack.eps=a/b", "attack.eps"), ("attack.alpha=2/x", "attack.alpha"),
    ("eval.pgd_alpha=1/2/3", "eval.pgd_alpha"), ("attack.eps=8/", "attack.eps"),
])
def test_bad_fractions_get_one_line_naming_the_field(capsys, tmp_path, override, field):
    line = one_error_line(capsys, "train", override, f"out={tmp_path / 'out'}", *TINY)
    assert line.startswith(f"energy-at train: error: {field}:") and "8/255" in line, line
    assert not (tmp_path / "out").exists()
    line = one_error_line(capsys, "sweep", "sweep=smoke", override, f"sweep.out={tmp_path / 'out'}")
    assert field in line and "8/255" in line, line
    assert not (tmp_path / "out").exists()


def test_comma_list_without_m_says_add_m(capsys, tmp_path):
    line = one_error_line(capsys, "train", "method=fgsm,pgd", f"out={tmp_path / 'out'}")
    assert line.startswith("energy-at train: error: method:"), line
    assert "comma lists run several trials: add -m (energy-at train -m method=fgsm,pgd" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, flag", [
    (["--cfg", "bogus"], "--cfg"), (["--cfg"], "--cfg"), (["--info", "everything"], "--info"),
    (["--resolve"], "--resolve"), (["-cn", "mine"], "-cn"), (["--bogus"], "--bogus"),
])
def test_bad_flags_get_one_line(capsys, argv, flag):
    assert one_error_line(capsys, "train", *argv).startswith(f"energy-at train: error: {flag}:")


def test_info_shows_search_path_defaults_and_groups(capsys, user_dir):
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    rc, text, err = run(capsys, "train", "--info", "-cd", str(user_dir), "method=mine")
    assert rc == 0, err
    assert "Config search path" in text and f"file://{user_dir}" in text and "pkg://orchestrator.conf" in text
    assert "method: mine" in text  # Hydra's defaults tree
    assert "Config groups" in text and " mine* " in text
    assert (root.level, list(root.handlers)) == before  # Hydra's logging set-up did not leak
    rc, text, _ = run(capsys, "sweep", "--info", "searchpath")
    assert rc == 0 and "pkg://orchestrator.conf" in text


def test_multirun_runs_the_user_method_with_a_fraction_eps(tmp_path, user_dir):
    """`train -m` hands the user's dir and the fraction to Hydra's own run (basic launcher), not only to
    the validation before it."""
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "-m", "--config-dir", str(user_dir),
                           "method=mine,fgsm", "attack.eps=8/255", *TINY, f"out={out}"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    configs = [json.loads(p.read_text()) for p in out.glob("trials/trial=*/config.json")]
    by_method = {c["method.name"]: c for c in configs}
    assert sorted(by_method) == ["fgsm", "trades"] and by_method["trades"]["method.beta"] == 2.5
    assert all(c["attack.eps"] == 8 / 255 for c in configs)


def test_sweep_plan_composes_the_user_preset(tmp_path, user_dir):
    """What `energy-at sweep --config-dir DIR sweep=mysweep` plans (cli.sweep: SweepPlan inside search_path)."""
    from orchestrator.config import search_path, searchpath_entry
    from orchestrator.sweep import SweepPlan

    with search_path([searchpath_entry(str(user_dir))]):
        plan = SweepPlan.from_overrides(["sweep=mysweep", f"sweep.out={tmp_path / 's'}", "epochs=1"])
    assert plan.settings.name == "mysweep"
    assert sorted((t.method.name, t.method.beta) for t in plan.trials) == [("fgsm", 6.0), ("trades", 2.5)]
    assert all(t.attack.eps == 8 / 255 for t in plan.trials)


def test_sweep_cfg_job_plans_every_trial_and_runs_nothing(capsys, tmp_path):
    out = tmp_path / "s"
    rc, text, err = run(capsys, "sweep", "sweep=smoke", "method=fgsm,pgd", "seed=0,1", f"sweep.out={out}", "--cfg", "job")
    assert rc == 0, err
    assert yaml.safe_load(text)["sweep"]["out"] == str(out)  # still YAML: the plan is in comments
    plan = [ln.removeprefix("# ").split() for ln in text.splitlines() if ln.startswith("# ")]
    assert plan[0] == ["planned,", "not", "run:"] and "4 trials" in " ".join(plan[1])
    assert plan[2] == ["trial", "method.name", "attack.steps", "seed"]  # the keys that vary across trials
    assert [(row[0].split("-")[0], row[1], row[3]) for row in plan[3:]] == [
        ("fgsm", "fgsm", "0"), ("fgsm", "fgsm", "1"), ("pgd", "pgd", "0"), ("pgd", "pgd", "1")]
    assert not out.exists()
    line = one_error_line(capsys, "sweep", "sweep=smoke", "method=fgsm,fgsmm", f"sweep.out={out}", "--cfg", "job")
    assert line.startswith("energy-at sweep: error: trial 1 (") and "method: unknown value 'fgsmm'" in line, line
    assert not out.exists()
