"""Install like a library, set up like an app: pyproject.toml states ranges, constraints.txt pins.

The ranges let energy-at go into an environment it shares (a GPU cluster's CUDA torch); the
pins make `make setup` reproducible. Each pin must lie inside its range, and the environment
the tests run in must satisfy the ranges (and, when it is the `.venv` `make setup` made, the pins).
"""
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"]] + [
    Requirement(r) for extra in PROJECT.get("optional-dependencies", {}).values() for r in extra]


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one `name==version` a line, no extras, no markers
        assert spec.operator == "==" and not req.extras and req.marker is None, line
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


PINS = constraints()


def test_pyproject_states_ranges_not_pins():
    for req in REQUIREMENTS:
        assert all(s.operator not in ("==", "===") for s in req.specifier), f"{req} is pinned: pin it in constraints.txt"
    assert "<" not in PROJECT["requires-python"], "no upper bound on Python"


def test_every_dependency_is_pinned_inside_its_range():
    for req in REQUIREMENTS:
        name = canonicalize_name(req.name)
        assert name in PINS, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(PINS[name], prereleases=True), f"constraints.txt {name}=={PINS[name]} outside {req}"
    # a torch without a pin would come as a multi-GB CUDA build
    assert {"torch", "torchvision", "torch-fidelity"} <= PINS.keys()
    assert not PINS["torch"].local and not PINS["torchvision"].local  # a +cpu or +cuXXX build of it both satisfy


def test_the_installed_versions_satisfy_the_ranges():
    for req in REQUIREMENTS:
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed")
        assert req.specifier.contains(installed, prereleases=True), f"installed {req.name} {installed} outside {req}"


def _installed_closure(*names: str) -> dict:
    """The installed distributions of `names` and of everything they require (name -> Distribution)."""
    from importlib.metadata import distribution

    todo, found = list(names), {}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = dist = distribution(name)
        except PackageNotFoundError:
            continue  # required only on other platforms (markers) or not installed
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return found


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="not the .venv `make setup` made from constraints.txt")
def test_the_setup_venv_has_the_pinned_versions_and_nothing_else():
    from importlib.metadata import distributions

    for name, pin in PINS.items():
        installed = Version(version(name))
        assert Version(installed.public) == pin, f"{name}: installed {installed}, constraints.txt {pin}"
    # the resolver adds whatever a pinned package needs and the lock lacks: constraints.txt is then incomplete
    # (a CUDA torch installed first brings its own nvidia-* wheels: not the lock's business)
    # only what pip installed: not the copies Ray and setuptools vendor (ray/thirdparty_files, setuptools/_vendor),
    # which join sys.path once they are imported
    installed = {canonicalize_name(d.metadata["Name"]) for d in distributions()
                 if Path(getattr(d, "_path", "")).parent.name == "site-packages"}
    unpinned = (installed - PINS.keys()
                - _installed_closure("torch", "torchvision").keys() - {"pip", "energy-at"})
    assert not unpinned, f"installed but not in constraints.txt: {sorted(unpinned)}"


def test_pip_check_is_clean():
    """`pip check` on the installed set: no missing dependency, no conflict (torchattacks 3.5.1's
    requests~=2.25.1 against databricks-sdk's requests>=2.28.1 was one until pyautoattack replaced it)."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

def _venv_holding_torch(root: Path) -> Path:
    """A new venv that holds torch and torchvision as pip's resolver sees them: the installed metadata
    (`*.dist-info`) of both and of their dependencies, copied from this environment, and nothing else.
    pip resolves from metadata alone, so a dry run here answers as in a fresh venv with torch installed,
    without the gigabyte of torch; the venv has no pip (the outer pip drives it through --python)."""
    import sysconfig
    import venv

    venv.EnvBuilder(with_pip=False).create(root)
    paths = {"base": str(root), "platbase": str(root)}
    site = Path(sysconfig.get_path("purelib", vars=paths))
    for dist in _installed_closure("torch", "torchvision").values():
        meta = next(f for f in dist.files if f.name == "METADATA" and f.parent.name.endswith(".dist-info"))
        shutil.copytree(meta.locate().parent, site / meta.parent.name)
    return Path(sysconfig.get_path("scripts", vars=paths)) / ("python.exe" if sys.platform == "win32" else "python")


def _dry_run(python: Path, target: str, report: Path, limit_s: float = 600) -> tuple[int, float, float, str]:
    """`pip install --dry-run target` into the venv of `python`: (exit code, wall s, CPU s, stderr tail).
    CPU is pip's own user + system time (with the build backend it ran), from os.wait4."""
    import os
    import subprocess
    import tempfile
    import threading
    import time

    with tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run",
                                 "--quiet", "--report", str(report), target],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(limit_s, proc.kill)  # a backtracking resolver does not stop by itself
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return (proc.returncode, time.monotonic() - start, usage.ru_utime + usage.ru_stime, err.read()[-3000:])


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(sys.platform == "win32", reason="os.wait4")
def test_pip_resolves_each_install_in_a_fresh_venv_holding_torch(tmp_path):
    """`pip install .`, `.[tracking]`, `.[optuna]`, `.[test]`: pip's resolver (this environment's pip, as a
    fresh venv has it) finds a solution from PyPI, keeps the installed torch, and the plan holds no
    torchattacks (its requests~=2.25.1 pin made `[tracking]` unresolvable: pip backtracked through Ray,
    wandb and databricks-sdk releases for more than 15 minutes). Dry runs (`--dry-run --report`), the
    four at once. The budget is 120 s of pip's CPU time each: wall time on a shared machine is mostly
    waiting (here, 2 cores at load 12: 340 s wall for 37 s CPU); a run past 600 s wall is stopped."""
    from concurrent.futures import ThreadPoolExecutor
    import json

    pip_version = Version(version("pip"))
    if pip_version < Version("22.3"):
        pytest.skip(f"pip {pip_version} has no --python")
    python = _venv_holding_torch(tmp_path / "venv")
    targets = (".", ".[tracking]", ".[optuna]", ".[test]")
    reports = {t: tmp_path / f"report{i}.json" for i, t in enumerate(targets)}
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = dict(zip(targets, pool.map(lambda t: _dry_run(python, t, reports[t]), targets)))
    print("pip", pip_version, "dry-run resolution (wall s, CPU s):",
          {t: (round(wall), round(cpu)) for t, (_, wall, cpu, _) in runs.items()})
    for target, (rc, wall, cpu, err) in runs.items():
        assert rc == 0, f"pip install {target!r} (exit {rc} after {wall:.0f} s):\n{err}"
        assert cpu < 120, f"pip install {target!r}: {cpu:.0f} s of CPU to resolve"
        plan = {canonicalize_name(i["metadata"]["name"]) for i in json.loads(reports[target].read_text())["install"]}
        assert "energy-at" in plan and not plan & {"torch", "torchvision", "torchattacks"}, (target, sorted(plan))
