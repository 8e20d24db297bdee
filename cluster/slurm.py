"""A payload as ONE multi-node Slurm job with a Ray cluster inside it (submitit).

    submit(payload, spec) -> one job, nodes=spec.nodes, one task per node, folder <spec.folder>/%j
      node 0: Ray head (cluster/ray_cluster.py), then `payload()` connected to it
      node k: Ray worker, until node 0 is done

The payload is any picklable callable returning a dict; this module knows nothing of what
it runs (`energy-at sweep cluster=slurm` hands it a Tune sweep: orchestrator/sweep.py). On a
time limit or a preemption submitit calls `RayJob.checkpoint()` (node 0): it stops this run's
Ray and returns the same job to requeue; the payload must resume from its own state on disk
(a Tune sweep restores its experiment, trials continue from their checkpoints).

`<spec.folder>/job.json` records the job for `energy-at status` and `energy-at cancel`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from cluster.ray_cluster import SlurmRayCluster
from workloads.run_dir import read_json, write_json

MAX_NUM_TIMEOUT = 10  # requeues on reaching the time limit (preemptions do not count)
SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: time to stop Ray and requeue
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}


class SubmitError(RuntimeError):
    """The sweep cannot be submitted (e.g. a job of the same sweep directory is still active)."""


@dataclass
class JobSpec:
    """What the Slurm job asks for and where it keeps its files."""

    name: str
    folder: Path  # job folders <folder>/<job id>/ and job.json
    nodes: int = 1
    timeout_min: int = 60
    cpus_per_node: int | None = None
    gpus_per_node: int = 0
    mem_gb: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    dashboard: bool = False
    env: dict[str, str] = field(default_factory=dict)  # environment of every Ray worker (e.g. PYTHONPATH)
    record: dict = field(default_factory=dict)  # extra fields for job.json


class RayJob(Checkpointable):
    """The callable submitit runs on every node: a Ray cluster, and the payload on node 0."""

    def __init__(self, payload: Callable[[], dict], spec: JobSpec):
        self.payload, self.spec = payload, spec  # both pickle as they are
        self._cluster: SlurmRayCluster | None = None
        self._interrupted = False

    def __getstate__(self) -> dict:
        return {"payload": self.payload, "spec": self.spec}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["payload"], state["spec"])

    def _make_cluster(self) -> SlurmRayCluster:
        env = submitit.JobEnvironment()
        c = self.spec
        object_store = int(c.mem_gb * 0.3 * 2**30) if c.mem_gb else None
        gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", c.gpus_per_node or 0) or 0)
        return SlurmRayCluster(c.folder / str(env.job_id), str(env.job_id), env.node, env.num_nodes,
                               restart=int(os.environ.get("SLURM_RESTART_COUNT", 0)), num_cpus=c.cpus_per_node,
                               num_gpus=gpus, object_store_bytes=object_store, dashboard=c.dashboard)

    def __call__(self) -> dict:
        cluster = self._cluster = self._make_cluster()
        print(f"[energy-at] job {cluster.job_id} node {cluster.node}/{cluster.nodes} restart {cluster.restart} "
              f"on {os.uname().nodename} ({os.environ.get('SLURMD_NODENAME', '?')})", flush=True)
        if cluster.node != 0:
            return cluster.run_worker()
        ok = False
        try:
            cluster.start_head()
            seen = cluster.connect(runtime_env={"env_vars": self.spec.env})
            summary = {"nodes": seen["nodes_alive"], "restart": cluster.restart} | self.payload()
            ok = True
        finally:
            if not self._interrupted:
                cluster.finish(graceful=True)
                if ok:
                    cluster.cleanup()
        return summary

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Timeout/preemption (node 0): stop this run's Ray and requeue the same job."""
        self._interrupted = True
        if self._cluster is not None:
            print(f"[energy-at] job {self._cluster.job_id}: interrupted, stopping Ray and requeuing", flush=True)
            # No ray.shutdown() here: this runs in a signal handler, inside the payload. Stopping the
            # head ends the driver's connection; the workers see done.<restart> and stop too.
            self._cluster.finish(graceful=False)
        return DelayedSubmission(RayJob(self.payload, self.spec))


def executor(spec: JobSpec) -> submitit.AutoExecutor:
    """An AutoExecutor (cluster="slurm": never a silent local fallback) for the job."""
    ex = submitit.AutoExecutor(folder=spec.folder / "%j", cluster="slurm", slurm_max_num_timeout=MAX_NUM_TIMEOUT)
    root = Path(__file__).resolve().parents[1]
    params = {"name": spec.name, "nodes": spec.nodes, "tasks_per_node": 1,
              "timeout_min": spec.timeout_min, "cpus_per_task": spec.cpus_per_node,
              "gpus_per_node": spec.gpus_per_node or None, "mem_gb": spec.mem_gb, "slurm_partition": spec.partition,
              "slurm_account": spec.account, "slurm_qos": spec.qos,
              "slurm_signal_delay_s": min(SIGNAL_DELAY_S, max(10, spec.timeout_min * 60 // 4)),
              # the job imports this checkout even where it is not installed
              "slurm_setup": [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"]}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit(payload: Callable[[], dict], spec: JobSpec) -> submitit.Job:
    """Submit `payload` as one multi-node Slurm job; records it in <spec.folder>/job.json."""
    previous = read_job(spec.folder)
    if previous and previous.get("kind") == "ray":
        state = job_state(previous["job_id"]).get("state", "")
        if is_active(state):
            raise SubmitError(f"Slurm job {previous['job_id']} of {spec.folder.parent} is still {state}; "
                              f"`energy-at cancel {spec.folder.parent}` first")
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found: is this a Slurm login node?")
    job = executor(spec).submit(RayJob(payload, spec))
    history = (previous or {}).get("history", []) + ([previous["job_id"]] if previous else [])
    write_job(spec.folder, {"kind": "ray", "job_id": str(job.job_id), "folder": str(job.paths.folder),
                            "name": spec.name, "nodes": spec.nodes, "submitted": time.time(), **spec.record,
                            "history": history})
    return job


# --- job bookkeeping, state, cancel (used by `energy-at status|cancel`) -----------------------------
def job_file(folder: str | Path) -> Path:
    return Path(folder) / "job.json"


def write_job(folder: str | Path, record: dict) -> None:
    write_json(job_file(folder), record)


def read_job(folder: str | Path) -> dict | None:
    return read_json(job_file(folder))


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def job_state(job_id: str) -> dict:
    """{"state", "elapsed", "nodes", "exit_code", "restarts"} from sacct (or squeue if sacct has nothing)."""
    out = _run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "JobID,State,Elapsed,NodeList,ExitCode"])
    rows = [r.split("|") for r in (out or "").splitlines() if r.strip()]
    rows = [r for r in rows if r[0] == str(job_id) or r[0].startswith(f"{job_id}_")]
    info: dict = {}
    if rows:  # an array id matches all its tasks: report an active one if there is one
        _, state, elapsed, nodes, code = next((r for r in rows if is_active(r[1])), rows[-1])[:5]
        info = {"state": state, "elapsed": elapsed, "nodes": nodes, "exit_code": code}
    live = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T|%M|%N|%r"])
    if live and live.strip():
        state, elapsed, nodes, reason = (live.strip().splitlines()[0].split("|") + ["", "", "", ""])[:4]
        if state == "COMPLETING" and info.get("state") and not is_active(info["state"]):
            state = info["state"]  # sacct already knows how it ended (CANCELLED, FAILED, ...)
        info.update(state=state, elapsed=elapsed, nodes=nodes or info.get("nodes", ""),
                    reason=reason if reason not in ("None", "") else None)
    dup = _run(["sacct", "-X", "-n", "-P", "-D", "-j", str(job_id), "-o", "State"])
    if dup:
        info["restarts"] = sum(1 for s in dup.split() if s.startswith(("REQUEUED", "PREEMPTED")))
    return info


def is_active(state: str | None) -> bool:
    """A Slurm state ("RUNNING", "CANCELLED by 0", ...) that may still do work."""
    return bool(state) and state.split()[0].rstrip("+") in ACTIVE_STATES


def cancel(job_id: str) -> bool:
    return subprocess.run(["scancel", str(job_id)], capture_output=True, text=True).returncode == 0
