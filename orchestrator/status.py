"""`energy-at status <sweep_dir>` and `energy-at cancel <sweep_dir>`.

A trial's status comes from what the trial wrote (`trials/trial=<id>/result.json`: running,
finished, stopped, diverged, failed) corrected by Ray Tune's experiment state (a trial Tune
gave up on after `sweep.max_failures` retries is `failed`, even if it crashed before writing
anything), by the Slurm job (a trial still `running` in a job that is over was
`interrupted`) and, without a Slurm job, by the locks its process held: `energy-at train` (and
each `train -m` job) holds `trials/trial=<id>/.lock`, a local sweep's driver holds
`<sweep_dir>/.lock` (flock, released when the process dies; the file names the holder's pid
and host). A `running` trial whose lock nobody holds any more is `interrupted` (re-running the
same command resumes it from its last checkpoint). A running trial's progress is read from
its `epochs` table (one row per split and finished epoch), since result.json is written only
when the trial starts and ends. The Slurm job is the one recorded at submit time in
`<sweep_dir>/slurm/job.json` (one Ray job for `energy-at sweep cluster=slurm`, one job per trial
for `energy-at train -m` with the submitit launcher); its state comes from sacct/squeue.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path

from workloads.config import OneLineParser
from workloads.run_dir import STATUSES, RunDir, read_json

DONE = tuple(s for s in STATUSES if s != "running")  # how a trial ended
_EXC = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b:?")  # "pkg.FooError: msg"


def _fail(command: str, message: str) -> int:
    print(f"energy-at {command}: error: {message}", file=sys.stderr)
    return 2


def tune_trials(sweep_dir: Path) -> dict[str, dict]:
    """{trial id: {"tune": PENDING|RUNNING|PAUSED|TERMINATED|ERROR, "failures", "error"}} from Tune's state,
    read through Tune's public `ExperimentAnalysis` (the sweep's experiment under `<out>/tune`)."""
    tune = RunDir(sweep_dir).tune()
    experiments = sorted((d for d in tune.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime) if tune.is_dir() else []
    if not experiments:
        return {}
    from ray.tune import ExperimentAnalysis

    # It also loads each trial's metrics and warns, one line per trial, for those that have none yet (every
    # pending trial); status reads only the trials' states.
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        trials = ExperimentAnalysis(str(experiments[-1])).trials
    except Exception:  # no experiment state yet, or one from another Ray version: status reads result.json alone
        return {}
    finally:
        log.setLevel(level)
    out: dict[str, dict] = {}
    for trial in trials:
        name = str(trial.custom_dirname or trial.trial_id)
        error = _error_line(Path(trial.path)) if trial.status == "ERROR" and trial.path else None
        out[name] = {"tune": trial.status, "failures": trial.num_failures, "error": error}
    return out


def _error_line(trial_dir: Path) -> str | None:
    """The last line of Tune's error file (the exception), if there is one."""
    try:
        text = (trial_dir / "error.txt").read_text(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    heads = [ln for ln in lines if _EXC.match(ln)]
    return (heads or lines)[-1][:200] if heads or lines else None


def job_info(sweep_dir: Path) -> tuple[dict | None, list[dict]]:
    """(the sweep's job record, [{"job_id", "state", ...} for each of its Slurm jobs]).

    `slurm/job.json` is written at submit time by `energy-at sweep cluster=slurm`; the jobs of
    `energy-at train -m hydra/launcher=submitit_slurm` each record themselves in `slurm/jobs/`.
    """
    from cluster.slurm import job_state, read_job

    job = read_job(RunDir(sweep_dir).slurm())
    records = [r for p in sorted(RunDir(sweep_dir).slurm("jobs").glob("*.json")) if (r := read_json(p))]
    if records:
        job = {"kind": "multirun", "job_ids": [r["job_id"] for r in records],
               "array_job_ids": sorted({r.get("array_job_id") or r["job_id"] for r in records}),
               "trial_jobs": {r["trial"]: r["job_id"] for r in records},
               "trials": [{"trial": r["trial"]} for r in records],
               "folder": str(Path(records[-1]["folder"]).parent)} if not job else job
    if not job:
        return None, []
    ids = job.get("job_ids") or [job["job_id"]]
    return job, [{"job_id": str(i), **job_state(str(i))} for i in ids]


_HOLDER = re.compile(r"pid (\d+) on (\S+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_state(path: Path) -> tuple[str | None, str | None]:
    """(`held` | `free` | None when unknown, the holder it names) of a RunDir lock file.

    `free`: no process holds it, so whoever wrote it has ended. The recorded holder on this host
    with a dead pid settles it; otherwise a non-blocking shared flock tells (held for an instant,
    it is released at once). No file, or a filesystem without flock: None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, None
    try:
        text = os.read(fd, 4096).decode(errors="replace").strip()
        m = _HOLDER.match(text)
        holder = f"pid {m[1]} on {m[2]}" if m else None
        if m and m[2] == socket.gethostname() and not _pid_alive(int(m[1])):
            return "free", holder
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held", holder
        except OSError:
            return None, holder
        return "free", holder
    finally:
        os.close(fd)  # releases the probe's lock


def epochs_logged(sweep_dir: Path, trials: list[str]) -> dict[str, int]:
    """{trial: epochs evaluated so far} from the `epochs` table (analysis.read's reader)."""
    if not trials:
        return {}
    try:
        import polars as pl

        from analysis.read import SweepLogs

        df = (SweepLogs(sweep_dir, warn=False, trials=trials).scan("epochs").group_by("trial")
              .agg(pl.col("epoch").max()).collect())
    except Exception:  # progress is a nicety: never fail `status` over an unreadable table
        return {}
    return {t: int(e) + 1 for t, e in zip(df["trial"], df["epoch"]) if e is not None}


def trial_rows(sweep_dir: Path, job: dict | None, jobs: list[dict]) -> list[dict]:
    from cluster.slurm import is_active

    planned = {t["trial"]: t.get("epochs") for t in (job or {}).get("trials", []) if isinstance(t, dict)}
    tune = tune_trials(sweep_dir)
    run_dir = RunDir(sweep_dir)
    written = set(run_dir.trial_ids())
    job_over = bool(jobs) and not any(is_active(j.get("state")) for j in jobs)
    multirun_state = {str(j["job_id"]): j.get("state") for j in jobs}
    # without a Slurm job: is a local sweep driver still alive? (`energy-at sweep` holds <sweep_dir>/.lock)
    driver, driver_holder = (None, None) if jobs else lock_state(run_dir.lock_file())
    rows = []
    for tid in sorted(set(planned) | set(tune) | written):
        tdir = run_dir.trial(tid)
        config = run_dir.read_config(tid) or {}
        result = run_dir.read_result(tid) or {}
        t = tune.get(tid, {})
        status, reason = result.get("status"), result.get("reason")
        if t.get("tune") == "ERROR":
            status, reason = "failed", t.get("error") or reason
        elif status in DONE:
            pass
        elif status == "running":
            if jobs:
                status = "interrupted" if job_over else "running"
            else:
                gone, holder = _process_gone(tdir, driver, driver_holder)
                if gone:
                    status, reason = "interrupted", (f"its process ({holder or 'the lock holder'}) is gone; "
                                                     "run the same command again to resume")
        elif t.get("tune") == "RUNNING" and not job_over:
            # started, not yet past Trial() (result.json comes with run()); a dead local driver: interrupted
            status = "interrupted" if driver == "free" else "running"
        else:
            status = "not started" if job_over or driver == "free" else "pending"
        slurm_job = (job or {}).get("trial_jobs", {}).get(tid)
        if slurm_job and status in ("running", "pending", "interrupted"):
            state = (multirun_state.get(str(slurm_job)) or "").split(" ")[0]
            if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                status, reason = "failed", reason or f"Slurm job {slurm_job} {state}"
        rows.append({"trial": tid, "status": status, "reason": reason,
                     "epochs_done": result.get("epochs_done", 0),
                     "epochs": config.get("epochs") or planned.get(tid),
                     "failures": t.get("failures", 0), "slurm_job": slurm_job})
    # result.json holds the epoch a trial started at: a running or interrupted one has gone further
    progress = epochs_logged(sweep_dir, [r["trial"] for r in rows if r["status"] in ("running", "interrupted")])
    for r in rows:
        if r["trial"] in progress:
            r["epochs_done"] = max(r["epochs_done"] or 0, progress[r["trial"]])
        r["epoch"] = None  # the epoch a running trial is in (1-based, as its progress bar shows it)
        if r["status"] == "running":
            total = r["epochs"]
            r["epoch"] = r["epochs_done"] + 1 if total is None or r["epochs_done"] < total else None
            r["reason"] = r["reason"] or (f"in epoch {r['epoch']}/{total if total is not None else '?'}"
                                          if r["epoch"] else "final test evaluation")
    return rows


def _process_gone(trial_dir: Path, driver: str | None, driver_holder: str | None) -> tuple[bool, str | None]:
    """(whether nobody runs the trial any more, the last holder): its own lock (energy-at train, train -m)
    or, for a trial of a local sweep, the sweep driver's. No lock at all: not known, taken as running."""
    state, holder = lock_state(RunDir(trial_dir).lock_file())
    if state == "held" or driver == "held":
        return False, None
    if state == "free" or driver == "free":
        return True, holder if state == "free" else driver_holder
    return False, None


def _parse_sweep_dir(parser: argparse.ArgumentParser, argv: list[str], command: str) -> argparse.Namespace | int:
    """Parse argv; an exit code instead of the namespace for --help, bad arguments or a missing sweep_dir."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not Path(args.sweep_dir).is_dir():
        return _fail(command, f"{args.sweep_dir}: no such directory")
    return args


def status(argv: list[str], *, max_refreshes: int | None = None, sleep=time.sleep) -> int:
    """energy-at status <sweep_dir> [--json] [--watch [SECONDS]]

    `--watch` clears the screen (on a terminal) and prints again every SECONDS (default 2) until
    interrupted (Ctrl-C); `max_refreshes` ends it after that many printouts (for tests)."""
    parser = OneLineParser(prog="energy-at status", description="trials and Slurm job of a sweep")
    parser.add_argument("sweep_dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until interrupted")
    argv = [("--watch=2" if a == "--watch" and not _is_number(argv[i + 1:i + 2]) else a)
            for i, a in enumerate(argv)]  # `--watch DIR`: the default period, DIR the sweep
    args = _parse_sweep_dir(parser, argv, "status")
    if isinstance(args, int):
        return args
    d = Path(args.sweep_dir).resolve()
    rd = RunDir(d)
    if not (rd.trials() or rd.tune().exists() or (rd.slurm() / "job.json").exists()):
        return _fail("status", f"{args.sweep_dir}: not a sweep directory (no trials/, tune/ or slurm/job.json)")
    if args.watch is None:
        print(render(d, args.json))
        return 0
    if args.watch <= 0:
        return _fail("status", f"--watch: needs a positive number of seconds, got {args.watch:g}")
    tty = sys.stdout.isatty()
    refreshes = 0
    try:
        while True:
            text = render(d, args.json, indent=None)  # before clearing: never a half-built screen
            if tty:
                sys.stdout.write("\033[H\033[2J")  # cursor home, clear screen
            if not args.json:  # --json --watch: one JSON object a line
                print(f"every {args.watch:g}s: energy-at status {args.sweep_dir}   {time.strftime('%H:%M:%S')}"
                      "   (Ctrl-C ends)")
            print(text, flush=True)
            refreshes += 1
            if max_refreshes is not None and refreshes >= max_refreshes:
                return 0
            sleep(args.watch)
    except KeyboardInterrupt:
        print()
        return 0


def _is_number(next_arg: list[str]) -> bool:
    try:
        float(next_arg[0])
    except (IndexError, ValueError):
        return False
    return True


def render(d: Path, as_json: bool = False, indent: int | None = 1) -> str:
    """The status of sweep directory `d`: a table, or one JSON object."""
    job, jobs = job_info(d)
    rows = trial_rows(d, job, jobs)
    counts = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] in ("stopped", "diverged") and r["reason"])
    if as_json:
        return json.dumps({"sweep_dir": str(d), "counts": counts, "trials": rows, "jobs": jobs,
                           "stop_reasons": reasons, "job": job}, indent=indent, default=str)
    lines = [f"sweep {d}: {len(rows)} trials (" + ", ".join(f"{n} {s}" for s, n in counts.most_common()) + ")"]
    for j in jobs:
        extra = "".join(f"  {k} {j[k]}" for k in ("elapsed", "nodes", "restarts", "reason") if j.get(k) not in (None, ""))
        lines.append(f"slurm job {j['job_id']}: {j.get('state') or 'unknown (not in sacct/squeue)'}{extra}")
    if job and job.get("folder"):
        lines.append(f"logs: {job['folder']}")
    if rows:
        w = max(len(r["trial"]) for r in rows)
        lines.append(f"\n{'trial':<{w}}  {'status':<11}  {'epochs':>7}  {'retries':>7}  reason")
        for r in rows:
            ep = f"{r['epochs_done']}/{r['epochs'] if r['epochs'] is not None else '?'}"
            reason = r["reason"] or ""
            lines.append(f"{r['trial']:<{w}}  {r['status']:<11}  {ep:>7}  {r['failures']:>7}  "
                         f"{reason[:100] + ('...' if len(reason) > 100 else '')}")
    if reasons:
        lines.append("\nstop reasons:")
        for reason, n in reasons.most_common():
            lines.append(f"  {n:>3}  {reason}")
    return "\n".join(lines)


def cancel(argv: list[str]) -> int:
    """energy-at cancel <sweep_dir>: scancel the sweep's Slurm job(s)."""
    from cluster.slurm import cancel as scancel
    from cluster.slurm import is_active, job_state

    parser = OneLineParser(prog="energy-at cancel", description="cancel the Slurm job(s) of a sweep")
    parser.add_argument("sweep_dir")
    args = _parse_sweep_dir(parser, argv, "cancel")
    if isinstance(args, int):
        return args
    d = Path(args.sweep_dir).resolve()
    job, jobs = job_info(d)
    if not job:
        return _fail("cancel", f"{args.sweep_dir}: no Slurm job recorded (no slurm/job.json)")
    rc = 0
    if job.get("array_job_ids"):  # a multirun: cancelling the arrays also cancels their pending tasks
        jobs = [{"job_id": a, **job_state(a)} for a in job["array_job_ids"]]
    for j in jobs:
        if not is_active(j.get("state")):
            print(f"slurm job {j['job_id']}: already {j.get('state') or 'gone'}")
            continue
        if not scancel(j["job_id"]):
            print(f"slurm job {j['job_id']}: scancel failed", file=sys.stderr)
            rc = 1
            continue
        deadline = time.monotonic() + 15
        while is_active(state := job_state(j["job_id"]).get("state")) and not (state or "").startswith("CANCELLED"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"slurm job {j['job_id']}: {state}")
    return rc
