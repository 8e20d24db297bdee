"""One trial, whoever launches it: `energy-at train`, each `train -m` job and each Ray Tune trial.

`run(cfg)` holds the trial's lock, builds the `Trial`, its stop rule (`stop_on`) and its trackers
(`tracking`), prints one line per epoch (a Slurm log or `nohup` shows progress), and leaves a
result.json on every ending: `finished`, `stopped` or `diverged` written by the trial, `failed` (it
raised) written here before the exception goes on. `workloads.run_dir.succeeded` is the one rule that
every command's exit status follows.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from orchestrator.config import RunConfig
from orchestrator.stopper import stop_rule
from workloads.config import ConfigError, flatten, trial_id
from workloads.data import DatasetError
from workloads.run_dir import DiskFull, RunDir, succeeded
from workloads.trial import Trial

EpochCallback = Callable[[Trial, dict], None]


def run(cfg: RunConfig, on_epoch: EpochCallback | None = None, *, before: Callable[[], None] | None = None,
        progress: bool = False) -> dict:
    """Run the trial of a validated `cfg` to its end, watched as its run settings say (`stop_on`, `tracking`);
    returns its summary (= result.json).

    `before` runs under the trial's lock before the trial resumes (Tune copies its checkpoint in);
    `on_epoch(trial, metrics)` after every epoch's evaluation, stop decision and checkpoint. A config
    or data error (ConfigError, DatasetError, a lock another process holds) raises before anything is
    written; any other exception is recorded as `failed`, then raised."""
    trial = sync = None
    with _lock(cfg):
        try:
            if before is not None:
                before()
            trial = Trial(cfg)
            sync = _trackers(cfg)
            print(headline(trial), flush=True)
            started = time.time()

            def epoch_done(metrics: dict) -> None:
                print(epoch_line(trial, metrics, time.time() - started), flush=True)
                if sync is not None:
                    sync.update(trial.id)
                if on_epoch is not None:
                    on_epoch(trial, metrics)

            summary = trial.run(epoch_done, stop=stop_rule(cfg), progress=progress)
        except (ConfigError, DatasetError):
            raise
        except Exception as e:
            _record_failure(cfg, trial, e)
            raise
        finally:
            if sync is not None:  # after the failure is recorded: a failed trial's runs end failed
                sync.finish(trial_id(cfg))
    print(summary_lines(summary, trial), flush=True)
    return summary


@contextlib.contextmanager
def _lock(cfg: RunConfig) -> Iterator[None]:
    """The trial's lock: one writer per trial, and `energy-at status` tells a running trial from an
    interrupted one by it. ConfigError if `out` cannot be written or another live process holds the
    lock; a filesystem without flock runs without it."""
    run_dir = RunDir(cfg.out).create()
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_dir.lock(run_dir.trial(trial_id(cfg))))
        except OSError as e:
            print(f"energy-at: running without the trial lock ({e})", file=sys.stderr)
        yield


def _trackers(cfg: RunConfig):
    """The TrackingSync of `cfg.tracking` (orchestrator/tracking), or None without trackers."""
    if not cfg.tracking:
        return None
    from orchestrator.tracking import TrackingSync

    return TrackingSync(cfg.out, cfg.tracking)


def _record_failure(cfg: RunConfig, trial: Trial | None, error: BaseException) -> None:
    """Keep what the trial logged so far and say why it failed (a rerun truncates to the checkpoint)."""
    try:
        tid, run_dir = trial_id(cfg), RunDir(cfg.out)
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        if trial is not None:
            trial.log.flush()
            result = trial.result("failed", reason)
        else:
            result = {"trial": tid, "status": "failed", "reason": reason, "epochs_done": 0, "steps_done": 0,
                      "out": str(cfg.out)}
        if run_dir.read_config(tid) is None:
            run_dir.write_config(tid, flatten(cfg) | {"trial_id": tid})
        run_dir.write_result(tid, result)
    except Exception as e:  # never hide the trial's own exception
        if not isinstance(e, DiskFull):  # a full disk: the trial's own error says so
            print(f"energy-at: could not record the failure of the trial: {e}", file=sys.stderr)


def outcomes(results: Iterable[tuple[str, dict | None]]) -> tuple[str, list[str]]:
    """A table of trials and the ids that did not succeed. Per trial: status, its result (the best-val
    checkpoint's test clean / PGD accuracy), the last model's test PGD, best val PGD and the reason."""
    rows, bad = [], []
    num = lambda r, k: f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "-"  # noqa: E731
    for tid, r in results:
        r = r or {"status": "missing", "reason": "no result.json"}
        if not succeeded(r):
            bad.append(tid)
        rows.append(f"  {tid:<28} {r.get('status', '?'):<9} {num(r, 'best_test_acc_nat'):>6} "
                    f"{num(r, 'best_test_acc_pgd'):>6} {num(r, 'test_acc_pgd'):>6} {num(r, 'best_val_acc_pgd'):>6}  "
                    f"{(r.get('reason') or '')[:60]}")
    head = (f"  {'trial':<28} {'status':<9} {'clean':>6} {'PGD':>6} {'last':>6} {'val':>6}  "
            "reason (test clean/PGD of best.pt, test PGD of the last model, best val PGD)")
    return "\n".join([head, *rows]), bad


# --- what a log shows -------------------------------------------------------------------------------
def headline(trial: Trial) -> str:
    cfg = trial.cfg
    return (f"trial {trial.id}: {cfg.method.name} (attack {trial.attack}, eps {cfg.attack.eps:g}) on "
            f"{cfg.data.name} [{len(trial.data.train)} train / {len(trial.data.val)} val], {trial.device}"
            + (f", resuming at epoch {trial.epoch + 1}" if trial.resumed else ""))  # 1-based, as the epoch lines


def epoch_line(trial: Trial, m: dict, seconds: float) -> str:
    """One line per epoch: loss, val clean / PGD, probe PGD, time, and the stop if there was one."""
    line = (f"trial {trial.id} epoch {m['epoch'] + 1}/{trial.cfg.epochs}  loss {m['train_loss']:.3f}  "
            f"val clean {m['val_acc_nat']:.3f} PGD {m['val_acc_pgd']:.3f}  probe PGD {m['probe_acc_pgd']:.3f}  "
            f"{seconds:.0f} s")
    if m.get("stopped") and trial.stop_event is not None:
        line += f"  stopped: {trial.stop_event['kind']}"
    return line


def summary_lines(s: dict, trial: Trial) -> str:
    lines = [f"status     {s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""),
             f"epochs     {s['epochs_done']}   steps {s['steps_done']}   {s.get('seconds', 0):.1f} s"]
    pgd = f"PGD-{trial.cfg.eval.pgd_steps}"
    if "best_test_acc_nat" in s:  # the trial's result: its best-val checkpoint
        lines.append(f"test       clean {s['best_test_acc_nat']:.3f}   {pgd} {s['best_test_acc_pgd']:.3f}   "
                     f"best.pt, epoch {s['best_epoch'] + 1}   (n={s['test_n']}, eps {trial.cfg.attack.eps:g})")
    if "test_acc_nat" in s:
        lines.append(f"{'test' if 'best_test_acc_nat' not in s else '':<10} clean {s['test_acc_nat']:.3f}   {pgd} "
                     f"{s['test_acc_pgd']:.3f}   last model, epoch {s['epochs_done']}")
    lines.append(f"best val   PGD {s['best_val_acc_pgd']:.3f} in epoch {s['best_epoch'] + 1}")  # 1-based, as the epoch lines
    lines.append(f"logs       {trial.out}/{{batches,epochs,probes}}/{trial.id}/")
    lines.append(f"checkpoint {trial.checkpoint_dir}/{{best,last}}.pt")
    return "\n".join(lines)
