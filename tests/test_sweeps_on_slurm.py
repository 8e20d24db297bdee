"""Sweeps on the REAL local 2-node Slurm (tests/conftest.py: slurm_cluster): Ray on Slurm through
submitit (cluster/slurm.py, cluster/ray_cluster.py), the Hydra multirun path (orchestrator/multirun.py),
and `energy-at status|cancel` (orchestrator/status.py). Tiny trials (sweep=smoke, 256 samples)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.ray_cluster import temp_dir
from cluster.slurm import is_active, job_state, read_job
from orchestrator.cli import main
from orchestrator.sweep import SweepPlan
from workloads.config import trial_id

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 240
SMOKE = ["sweep=smoke", "cluster=slurm", "cluster.nodes=2", "cluster.cpus_per_node=1", "cluster.partition=debug",
         "cluster.timeout_min=10", "cluster.mem_gb=2"]
TINY = ["epochs=2", "batch_size=64", "data.subset=256", "data.val_size=64", "data.probe_size=32",
        "data.test_size=64", "eval.pgd_steps=2"]


# --- helpers ----------------------------------------------------------------------------------------
def _energy_at(*args: str, cwd: Path | None = None, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def _submit(out: Path, *overrides: str) -> str:
    assert main(["sweep", *SMOKE, f"sweep.out={out}", *overrides]) == 0
    return read_job(Path(out) / "slurm")["job_id"]


def _wait(job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while is_active((info := job_state(job_id)).get("state")) or not info.get("state"):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"job {job_id} not done after {timeout_s:.0f}s: {info}")
        time.sleep(1)
    return info


def _wait_for(predicate, what: str, timeout_s: float = JOB_TIMEOUT_S, job_id: str | None = None):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline or (job_id and not is_active(job_state(job_id).get("state") or "PENDING")):
            pytest.fail(f"gave up waiting for {what}" + (f" (job {job_id}: {job_state(job_id)})" if job_id else ""))
        time.sleep(0.5)
    return value


def _steps(out: Path, trial: str) -> list[int]:
    """Every `step` of the trial's `batches` rows (visible part files only)."""
    steps: list[int] = []
    for f in sorted((out / "batches" / trial).glob("part-*.parquet")):
        steps += pq.read_table(f, columns=["step"]).column("step").to_pylist()
    return sorted(steps)


def _result(out: Path, trial: str) -> dict:
    return json.loads((out / "trials" / f"trial={trial}" / "result.json").read_text())


def _assert_exactly_once(out: Path, trial: str) -> None:
    r = _result(out, trial)
    assert r["status"] in ("finished", "stopped"), r
    assert r["steps_done"] > 0
    assert _steps(out, trial) == list(range(r["steps_done"])), f"{trial}: batches rows are not exactly once"


def _ray_processes(job_id: str) -> list[int]:
    """Processes of this job's Ray (their command lines name its temp dirs /tmp/ray_<job>_n<k>)."""
    marker = f"/ray_{job_id}_n".encode()
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """`energy-at <args>` in this process (status/cancel: no interpreter start-up per call)."""
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _status(capsys, out: Path) -> dict:
    rc, text, err = _cli(capsys, "status", str(out), "--json")
    assert rc == 0, err
    return json.loads(text)


def _corrupt_checkpoint(out: Path, trial: str) -> None:
    """A real, persistent failure: torch.load of the trial's last.pt raises at every start."""
    d = out / "checkpoints" / f"trial={trial}"
    d.mkdir(parents=True)
    (d / "last.pt").write_bytes(b"garbage, not a checkpoint")


def _our_slurm_jobs() -> set[str]:
    """Ids of every job these tests can submit (names energy-at-<sweep> and multirun), queued or in sacct."""
    sq = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True).stdout.split()
    sa = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName", "-S", "now-1days"],
                        capture_output=True, text=True).stdout.split()
    return {r.split("|")[0] for r in sq + sa if r.split("|")[-1] in ("energy-at-smoke", "multirun")}


# --- Ray on Slurm -----------------------------------------------------------------------------------
def test_two_node_ray_sweep_logs_once_and_fails_only_the_crashing_trial(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [*SMOKE, f"sweep.out={out}", "method=fgsm,rs_fgsm,n_fgsm", "sweep.max_failures=1"]
    trials = {t.method.name: t.trial_id for t in SweepPlan.from_overrides(argv).trials}
    _corrupt_checkpoint(out, trials["n_fgsm"])
    job_id = _submit(out, "method=fgsm,rs_fgsm,n_fgsm", "sweep.max_failures=1")

    info = _wait(job_id)
    assert info["state"] == "COMPLETED", info
    seen = json.loads((out / "slurm" / job_id / "cluster.json").read_text())
    assert seen["nodes_alive"] == seen["nodes_expected"] == 2  # both Slurm nodes joined the Ray cluster
    assert seen["cpus"] == 2
    head = json.loads((out / "slurm" / job_id / "head.json").read_text())
    assert (os.stat(out / "slurm" / job_id / "auth_token").st_mode & 0o777) == 0o600
    assert head["job_id"] == job_id and head["restart"] == 0
    for method in ("fgsm", "rs_fgsm"):
        _assert_exactly_once(out, trials[method])
    status = _status(capsys, out)
    rows = {r["trial"]: r for r in status["trials"]}
    assert rows[trials["n_fgsm"]]["status"] == "failed"
    assert rows[trials["n_fgsm"]]["failures"] >= 1  # retried (sweep.max_failures=1) before Tune gave up
    assert "Error" in (rows[trials["n_fgsm"]]["reason"] or "")  # the exception, from Tune's error.txt
    assert {rows[trials[m]]["status"] for m in ("fgsm", "rs_fgsm")} <= {"finished", "stopped"}
    assert status["jobs"][0]["state"] == "COMPLETED"
    assert (out / "report.html").exists()  # written by the job after the sweep
    assert _ray_processes(job_id) == []


def test_requeue_mid_sweep_resumes_exactly_once_with_token_auth(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    job_id = _submit(out, "epochs=3", "sweep.report=false")
    ids = [t.trial_id for t in SweepPlan.from_overrides([*SMOKE, f"sweep.out={out}", "epochs=3"]).trials]
    rdv = out / "slurm" / job_id
    _wait_for(lambda: (rdv / "cluster.json").exists(), "all nodes to join", job_id=job_id)

    # Token auth: one client process, three identities (no token, a wrong one, the job's token file).
    address = json.loads((rdv / "head.json").read_text())["address"]
    assert (os.stat(rdv / "auth_token").st_mode & 0o777) == 0o600
    code = ("import json, sys; from cluster.ray_cluster import probe; a = sys.argv[1]; "
            "print(json.dumps([probe(a), probe(a, token='0' * 64), probe(a, token_path=sys.argv[2])]))")
    proc = subprocess.run([sys.executable, "-c", code, address, str(rdv / "auth_token")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    no_token, wrong, right = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not no_token["ok"] and "AuthenticationError" in no_token["error"]
    assert not wrong["ok"] and "AuthenticationError" in wrong["error"]
    assert right == {"ok": True, "nodes_alive": 2}
    status = _status(capsys, out)
    assert status["jobs"][0]["state"] == "RUNNING"
    assert {r["status"] for r in status["trials"]} <= {"pending", "running"}

    _wait_for(lambda: list((out / "checkpoints").glob("trial=*/last.pt")), "a first checkpoint", job_id=job_id)
    import submitit

    submitit.SlurmJob(folder=out / "slurm" / "%j", job_id=job_id)._interrupt(timeout=True)  # USR2: checkpoint+requeue
    info = _wait(job_id)
    assert info["state"] == "COMPLETED", info
    assert info.get("restarts", 0) >= 1  # sacct --duplicates saw the REQUEUED run
    assert (rdv / "done.0").exists() and (rdv / "done.1").exists()  # a second Ray cluster was built
    assert json.loads((rdv / "cluster.json").read_text())["restart"] == 1
    assert "Restoring the run" in (rdv / f"{job_id}_0_log.err").read_text()  # Tuner.restore, not a new run
    for tid in ids:  # no trial lost, every (trial, step) exactly once
        _assert_exactly_once(out, tid)
        assert _result(out, tid)["epochs_done"] == 3
    rc, text, _ = _cli(capsys, "status", str(out))
    assert rc == 0 and f"slurm job {job_id}: COMPLETED" in text and "restarts 1" in text
    assert _ray_processes(job_id) == []


def test_cancel_a_running_sweep(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    job_id = _submit(out, "epochs=200", "sweep.report=false")
    _wait_for(lambda: (out / "slurm" / job_id / "head.json").exists(), "the Ray head", job_id=job_id)
    rc, text, err = _cli(capsys, "cancel", str(out))
    assert rc == 0, err
    assert f"slurm job {job_id}: CANCELLED" in text
    assert _wait(job_id, 60)["state"].startswith("CANCELLED")
    _wait_for(lambda: not _ray_processes(job_id), "the job's Ray processes to exit", timeout_s=60)
    for node in (0, 1):  # a cancelled job leaves its node-local Ray temp dirs (a clean finish removes them)
        shutil.rmtree(temp_dir(job_id, node), ignore_errors=True)
    assert {r["status"] for r in _status(capsys, out)["trials"]} <= {"interrupted", "not started"}
    rc, text, _ = _cli(capsys, "cancel", str(out))
    assert rc == 0 and "already CANCELLED" in text
    rc, _, err = _cli(capsys, "status", str(tmp_path / "nope"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(capsys, "cancel", str(tmp_path))
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_bad_trial_config_submits_nothing(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    before = _our_slurm_jobs()
    assert main(["sweep", *SMOKE, f"sweep.out={out}", "attack.eps=0.1,-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trial 1" in err[0] and "attack.eps" in err[0], err
    assert main(["train", "-m", *TINY, f"out={out}", "attack.eps=0.1,-1", "hydra/launcher=submitit_slurm",
                 "hydra.launcher.partition=debug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trial 1" in err[0] and "attack.eps" in err[0], err
    assert not out.exists()  # no sweep dir, hence no submitit folder
    assert _our_slurm_jobs() == before


# --- Hydra multirun ---------------------------------------------------------------------------------
def test_multirun_slurm_array_with_a_crashing_trial_then_report(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "grid"
    from orchestrator.multirun import plan

    trials = {c.method.name: trial_id(c) for _, c in plan(["method=fgsm,rs_fgsm,n_fgsm", *TINY, f"out={out}"])}
    _corrupt_checkpoint(out, trials["n_fgsm"])
    proc = _energy_at("train", "-m", "method=fgsm,rs_fgsm,n_fgsm", *TINY, f"out={out}",
                      "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                      "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the crash is visible ...
    assert "Error executing job with overrides: ['method=n_fgsm'" in proc.stderr  # Hydra reports it
    for method in ("fgsm", "rs_fgsm"):  # ... and did not stop the other trials
        _assert_exactly_once(out, trials[method])
    failed = _result(out, trials["n_fgsm"])
    assert failed["status"] == "failed" and "Error" in failed["reason"]
    deadline = time.time() + 60
    while True:  # submitit returns a task's result before Slurm has run its epilogue: wait for final states
        status = _status(capsys, out)
        states = {r["trial"]: status_job["state"] for status_job in status["jobs"]
                  for r in status["trials"] if r["slurm_job"] == status_job["job_id"]}
        if not {"RUNNING", "COMPLETING", "PENDING"} & set(states.values()) or time.time() > deadline:
            break
        time.sleep(1)
    assert states == {trials["fgsm"]: "COMPLETED", trials["rs_fgsm"]: "COMPLETED", trials["n_fgsm"]: "FAILED"}
    logs = list((out / "hydra").glob("multirun-*/.submitit/*/*_log.err"))
    assert any("_resume" in f.read_text() for f in logs)  # the traceback is in the failed job's log
    rc, _, err = _cli(capsys, "report", str(out))
    assert rc == 0, err
    assert (out / "report.html").exists()


def test_multirun_basic_launcher_runs_each_trial_here(tmp_path):
    out = tmp_path / "grid"
    proc = _energy_at("train", "-m", "method=fgsm,rs_fgsm", *TINY, f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from orchestrator.multirun import plan

    for _, cfg in plan(["method=fgsm,rs_fgsm", *TINY, f"out={out}"]):
        _assert_exactly_once(out, trial_id(cfg))
    assert not (out / "slurm").exists()
