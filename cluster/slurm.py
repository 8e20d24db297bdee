"""`energy-at sweep cluster=slurm`: the whole sweep as ONE multi-node Slurm job (submitit).

    submit(plan) -> one job, nodes=cluster.nodes, one task per node, folder <sweep.out>/slurm/%j
      node 0: Ray head (cluster/ray_cluster.py) + Tune driver (plan.run_here()) + report
      node k: Ray worker, until node 0 is done

On a time limit or a preemption submitit calls `SweepJob.checkpoint()` (node 0): Tune's
experiment state is already on disk (`<sweep.out>/tune/<name>`, synced at every trial
checkpoint), so it only stops this run's Ray and returns the same job to requeue. The restart
builds a fresh Ray cluster and `plan.tuner()` restores the experiment with
`resume_unfinished=True, restart_errored=True`; trials continue from their checkpoints and
truncate their telemetry to them (exactly once).

`<sweep.out>/slurm/job.json` records the job for `energy-at status` and `energy-at cancel`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from cluster.ray_cluster import SlurmRayCluster
from workloads.run_dir import write_json

if TYPE_CHECKING:
    from orchestrator.sweep import SweepPlan

MAX_NUM_TIMEOUT = 10  # requeues on reaching the time limit (preemptions do not count)
SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: time to stop Ray and requeue
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED"}


class SubmitError(RuntimeError):
    """The sweep cannot be submitted (e.g. a job of the same sweep directory is still active)."""


class SweepJob(Checkpointable):
    """The callable submitit runs on every node of the sweep's job."""

    def __init__(self, plan: "SweepPlan"):
        self.plan = plan  # plain dataclasses and a Path: pickles as is
        self._cluster: SlurmRayCluster | None = None
        self._interrupted = False

    def __getstate__(self) -> dict:
        return {"plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["plan"])

    def _make_cluster(self) -> SlurmRayCluster:
        env = submitit.JobEnvironment()
        c = self.plan.cluster
        object_store = int(c.mem_gb * 0.3 * 2**30) if c.mem_gb else None
        gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", c.gpus_per_node or 0) or 0)
        return SlurmRayCluster(self.plan.dir / "slurm" / str(env.job_id), str(env.job_id), env.node, env.num_nodes,
                               restart=int(os.environ.get("SLURM_RESTART_COUNT", 0)), num_cpus=c.cpus_per_node,
                               num_gpus=gpus, object_store_bytes=object_store, dashboard=c.dashboard)

    def __call__(self) -> dict:
        cluster = self._cluster = self._make_cluster()
        print(f"[energy-at] job {cluster.job_id} node {cluster.node}/{cluster.nodes} restart {cluster.restart} "
              f"on {os.uname().nodename} ({os.environ.get('SLURMD_NODENAME', '?')})", flush=True)
        if cluster.node != 0:
            return cluster.run_worker()
        return self._head(cluster)

    def _head(self, cluster: SlurmRayCluster) -> dict:
        from orchestrator.sweep import _pythonpath

        plan, ok = self.plan, False
        try:
            cluster.start_head()
            seen = cluster.connect(runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            grid = plan.run_here()
            summary = {"nodes": seen["nodes_alive"], "restart": cluster.restart,
                       "trials": {(Path(r.path).name if r.path else str(i)): ("error" if r.error else "ok")
                                  for i, r in enumerate(grid)}}
            ok = True
        finally:
            if not self._interrupted:
                cluster.finish(graceful=True)
                if ok:
                    cluster.cleanup()
        if plan.settings.report:
            from analysis import commands

            summary["report_rc"] = commands.report([str(plan.dir)])
        return summary

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Timeout/preemption (node 0): Tune's state is on disk; stop this run's Ray and requeue."""
        self._interrupted = True
        if self._cluster is not None:
            print(f"[energy-at] job {self._cluster.job_id}: interrupted, stopping Ray and requeuing", flush=True)
            # No ray.shutdown() here: this runs in a signal handler, inside Tune's loop. Stopping the
            # head ends the driver's connection; the workers see done.<restart> and stop too.
            self._cluster.finish(graceful=False)
        return DelayedSubmission(SweepJob(self.plan))


def executor(plan: "SweepPlan") -> submitit.AutoExecutor:
    """An AutoExecutor (cluster="slurm": never a silent local fallback) for the plan's job."""
    c = plan.cluster
    ex = submitit.AutoExecutor(folder=plan.dir / "slurm" / "%j", cluster="slurm",
                               slurm_max_num_timeout=MAX_NUM_TIMEOUT)
    root = Path(__file__).resolve().parents[1]
    params = {"name": f"energy-at-{plan.settings.name}", "nodes": c.nodes, "tasks_per_node": 1,
              "timeout_min": c.timeout_min, "cpus_per_task": c.cpus_per_node,
              "gpus_per_node": c.gpus_per_node or None, "mem_gb": c.mem_gb, "slurm_partition": c.partition,
              "slurm_account": c.account, "slurm_qos": c.qos,
              "slurm_signal_delay_s": min(SIGNAL_DELAY_S, max(10, c.timeout_min * 60 // 4)),
              # the job imports this checkout even where it is not installed
              "slurm_setup": [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"]}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit(plan: "SweepPlan") -> submitit.Job:
    """Submit the plan as one multi-node Slurm job; records it in <sweep.out>/slurm/job.json."""
    previous = read_job(plan.dir)
    if previous and previous.get("kind") == "ray":
        state = job_state(previous["job_id"]).get("state", "")
        if is_active(state):
            raise SubmitError(f"Slurm job {previous['job_id']} of {plan.dir} is still {state}; "
                              f"`energy-at cancel {plan.dir}` first")
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found: is this a Slurm login node?")
    job = executor(plan).submit(SweepJob(plan))
    history = (previous or {}).get("history", []) + ([previous["job_id"]] if previous else [])
    write_job(plan.dir, {"kind": "ray", "job_id": str(job.job_id), "folder": str(job.paths.folder),
                         "name": plan.settings.name, "nodes": plan.cluster.nodes, "submitted": time.time(),
                         "trials": [{"trial": t.trial_id, "epochs": t.epochs} for t in plan.trials],
                         "history": history})
    return job


# --- job bookkeeping, state, cancel (used by `energy-at status|cancel`) -----------------------------
def job_file(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / "slurm" / "job.json"


def write_job(sweep_dir: str | Path, record: dict) -> None:
    write_json(job_file(sweep_dir), record)


def read_job(sweep_dir: str | Path) -> dict | None:
    try:
        return json.loads(job_file(sweep_dir).read_text())
    except (OSError, ValueError):
        return None


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
