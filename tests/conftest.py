import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
