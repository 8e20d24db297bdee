"""End-to-end checks of the local Slurm cluster (tests/support/slurm_local.sh) via submitit."""

import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

# Test modules are imported by pytest under a name the job's interpreter cannot
# import; ship this module's functions/classes by value instead of by reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_TIMEOUT_S = 180


def _executor(folder: Path, **params) -> submitit.AutoExecutor:
    # cluster="slurm": fail instead of silently falling back to local execution.
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=10, cpus_per_task=1, **params)
    return ex


def _wait(job: submitit.Job, timeout_s: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel()
            pytest.fail(f"job {job.job_id} not done after {timeout_s}s (state {job.state})")
        time.sleep(0.5)


def _square_with_env(x: int):
    return x * x, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURMD_NODENAME")


def _where_am_i():
    return (
        int(os.environ["SLURM_NODEID"]),
        os.environ["SLURMD_NODENAME"],
        int(os.environ["SLURM_PROCID"]),
        os.environ["SLURM_JOB_NUM_NODES"],
    )


class _Counter(submitit.helpers.Checkpointable):
    """Counts to `target`, one step per 0.5 s. State lives on `self`, so the
    checkpoint (which pickles self) carries progress over a requeue."""

    def __init__(self) -> None:
        self.step = 0
        self.starts: list[int] = []  # step value at each (re)start

    def __call__(self, progress_file: str, target: int):
        self.starts.append(self.step)
        while self.step < target:
            time.sleep(0.5)
            self.step += 1
            tmp = Path(f"{progress_file}.tmp")  # whole or absent: the test reads it while this job runs
            tmp.write_text(f"{len(self.starts)} {self.step}")
            os.replace(tmp, progress_file)
        return self.step, self.starts, int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def test_job_returns_value_on_slurm(slurm_cluster, tmp_path):
    job = _executor(tmp_path).submit(_square_with_env, 7)
    assert isinstance(job, submitit.SlurmJob)
    _wait(job)
    value, job_id, node = job.result()
    assert value == 49
    assert job_id == job.job_id
    assert node in {"n1", "n2"}
    # job.state is a cached sacct read (may still say PENDING): force fresh reads.
    # COMPLETED here proves accounting (slurmdbd) works, which submitit relies on.
    deadline = time.monotonic() + 60
    while (state := job.get_info(mode="force").get("State")) != "COMPLETED":
        assert time.monotonic() < deadline, f"sacct state of job {job.job_id}: {state}"
        time.sleep(0.5)


def test_two_node_job_spans_n1_and_n2(slurm_cluster, tmp_path):
    job = _executor(tmp_path, nodes=2, tasks_per_node=1).submit(_where_am_i)
    _wait(job)
    results = sorted(job.results())  # one result per task
    assert [r[0] for r in results] == [0, 1]  # SLURM_NODEID
    assert {r[1] for r in results} == {"n1", "n2"}  # SLURMD_NODENAME
    assert {r[2] for r in results} == {0, 1}  # SLURM_PROCID
    assert all(r[3] == "2" for r in results)


def test_checkpointable_job_requeues_and_resumes(slurm_cluster, tmp_path):
    progress = tmp_path / "progress"
    target = 16
    job = _executor(tmp_path / "submitit").submit(_Counter(), str(progress), target)

    # Interrupt once the first run has made some progress.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (progress.exists() and int(progress.read_text().split()[1]) >= 3):
        assert time.monotonic() < deadline, f"job {job.job_id} made no progress (state {job.state})"
        time.sleep(0.2)
    job._interrupt(timeout=True)  # USR2 as on a time limit: checkpoint + requeue

    _wait(job)
    step, starts, restart_count = job.result()
    assert step == target
    assert restart_count >= 1
    assert len(starts) == 2 and starts[0] == 0
    assert 3 <= starts[1] < target  # resumed from the checkpoint, not from 0
