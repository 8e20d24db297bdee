import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

# `make test` runs the suite on several workers (pytest-xdist, `-n auto`; the hooks below). Each
# worker's torch (and the commands it starts) gets an equal share of the cores, at least one, instead
# of all of them. Set before any test module imports torch.
# Ray runs its workers at nice 15 (its `worker_niceness`), below the raylet; beside other tests that
# would starve every Ray trial of the suite, so here they run at the tests' priority.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
    os.environ.setdefault("RAY_worker_niceness", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO_ROOT / "tests" / "support" / "slurm_local.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Start (or reuse) the local 2-node Slurm cluster; yields its base dir.

    Skipped only when ENERGY_AT_SKIP_SLURM=1; any start failure fails the test.
    The cluster is left running afterwards (re-start is idempotent, < 1 s).
    """
    if os.environ.get("ENERGY_AT_SKIP_SLURM") == "1":
        pytest.skip("ENERGY_AT_SKIP_SLURM=1")
    proc = subprocess.run(
        ["bash", str(SLURM_SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=900,  # first start may apt-get install (~15 s) plus waits
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{SLURM_SCRIPT} start failed (rc={proc.returncode})\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
            pytrace=False,
        )
    yield Path(os.environ.get("ENERGY_AT_SLURM_DIR", "/tmp/energy-at-slurm"))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: 1.5 workers a core, 2 to 4 (a third of a worker's time is spent waiting on Slurm, Ray
    and the start of the commands the tests run: a third worker fills it on 2 cores)."""
    return min(4, max(2, round(1.5 * (os.cpu_count() or 1))))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under xdist: each file's tests on one worker (a module fixture is made once), and every Slurm
    test (files named *slurm*) on one (one local cluster); files go out in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "slurm" if "slurm" in Path(path).name else path

    config.option.loadscopereorder = False  # xdist would put the files with most tests first
    return ByFile(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist: the files with most `slow` tests first, so that no long file is left for the end
    (the sort is stable: each file stays together, in pytest's order)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
