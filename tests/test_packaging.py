"""Install like a library, set up like an app: pyproject.toml states ranges, constraints.txt pins.

The ranges let energy-at go into an environment it shares (a GPU cluster's CUDA torch); the
pins make `make setup` reproducible. Each pin must lie inside its range, and the environment
the tests run in must satisfy the ranges (and, when it is the `.venv` `make setup` made, the pins).
"""
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


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="not the .venv `make setup` made from constraints.txt")
def test_the_setup_venv_has_the_pinned_versions():
    for name, pin in PINS.items():
        installed = Version(version(name))
        assert Version(installed.public) == pin, f"{name}: installed {installed}, constraints.txt {pin}"


def test_the_lock_file_has_one_known_conflict_and_is_complete():
    """`pip check` on the installed set: only torchattacks' stale requests pin (constraints.txt header);
    anything else (a missing dependency, a new conflict) means constraints.txt is not a complete lock."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in r.stdout.splitlines() if line.strip()]
    assert [p for p in problems if not p.startswith("torchattacks 3.5.1 has requirement requests~=2.25.1")] == [], \
        problems
