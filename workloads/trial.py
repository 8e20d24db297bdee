"""One adversarial-training trial: the single training loop every method shares.

config -> data, model, method -> per-step telemetry -> per-epoch evaluation ->
checkpoint. A trial resumes from its last checkpoint when run again with the same
config, and its logs end exactly once per (trial, step).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from workloads.attacks import ATTACKS, MULTI_STEP, AttackResult
from workloads.config import (CUDA_GRAPH_MODES, ConfigError, OptimConfig, TrialConfig, attack_alpha, eval_alpha,
                              flatten, trial_id, validate)
from workloads.data import DATASETS, Dataset, batches, num_batches
from workloads.evaluation.checkpoint import trial_data
from workloads.evaluation.per_epoch import evaluate_pgd
from workloads.host import frozen_heap, keep_freed_memory
from workloads.methods import Logits, Terms, get_method
from workloads.methods.replay_sgld import ReplayBuffer
from workloads.models import build_model
from workloads.run_dir import CheckpointError, RunDir, atomic_write
from workloads.schedule import lr_at
from workloads.telemetry import EnergyLog
from workloads.telemetry.trigger import LOOKS_PER_EPOCH, Fire, Trigger
from workloads.telemetry.writer import TERM_COLUMNS

NATURAL_COST = 0.005  # share of a step the natural-energy forward may take by default (telemetry.natural_every)
MIN_NATURAL_ROWS = 10  # ... unless that leaves fewer rows an epoch (co_energy's 20-row window: two epochs)

# stop(metrics) -> None to go on, or the detector event that ends the trial (early stopping): a dict with
# kind, epoch, step, score, evidence (the `events` columns); on_epoch(metrics) sees every epoch after it.
StopRule = Callable[[dict], "dict | None"]
EpochCallback = Callable[[dict], None]


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if there is one, else cpu; a CUDA device this machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()  # 0 on a machine (or a torch build) without CUDA
        if (device.index or 0) >= count:
            raise ConfigError("device", f"{name!r} but this machine has {count} CUDA device(s); use device=cpu or "
                              "device=auto")
    return device


@contextlib.contextmanager
def frozen_norm_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode forward that leaves BatchNorm running statistics untouched (momentum 0)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def build_optimizer(model: nn.Module, o: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD or Adam from `optim.*`; the fused (one-kernel) update on CUDA."""
    fused = device.type == "cuda" or None  # CPU keeps the default foreach update: CPU logs stay bit-identical
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                fused=fused)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           nesterov=o.nesterov, fused=fused)


@dataclass
class Step:
    """What one optimiser step computed (telemetry reads it after the update)."""

    x: torch.Tensor
    y: torch.Tensor
    logits: Logits
    terms: Terms
    attack: AttackResult | None
    natural: torch.Tensor | None = None  # f(x) for the log when the method has none (made before the update)


class Trial:
    """An AT trial built from a validated `TrialConfig`; `run()` trains, logs, evaluates, checkpoints."""

    def __init__(self, cfg: TrialConfig, data: Dataset | None = None):
        validate(cfg)
        self.cfg, self.id = cfg, trial_id(cfg)
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        if cfg.compile in CUDA_GRAPH_MODES and self.device.type != "cuda":  # validate sees only device=cpu, not auto
            raise ConfigError("compile", f"{cfg.compile!r} records CUDA graphs and needs a CUDA device, but "
                              f"device={cfg.device} is {self.device}; use compile=default or leave compile unset")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(cfg.seed)
        d = cfg.data
        self.data = data or trial_data(cfg, self.device, test_size=d.test_size)
        RunDir(cfg.out).create()  # after the data checks: a bad config writes nothing
        self.augment = self.data.augment if d.augment is None else d.augment
        c, h, _ = self.data.shape
        info = DATASETS[d.name]
        self.model = build_model(cfg.model.name, self.data.num_classes, c, h, info.mean, info.std).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.method = get_method(cfg.method.name)
        self.attack = self.method.attack_name(cfg.method, cfg.attack.name)
        self.alpha = attack_alpha(cfg)
        self.opt = build_optimizer(self.model, cfg.optim, self.device)
        if cfg.compile:
            self.model.compile(mode=cfg.compile)  # in place: state_dict keys stay those of the eager model
        self.sgld = (ReplayBuffer(self.data.shape, cfg.method.buffer_size, cfg.method.reinit, self.device)
                     if self.method.uses_sgld else None)
        self.steps_per_epoch = num_batches(len(self.data.train), cfg.batch_size, drop_last=False)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # steps between flushes, where the trigger looks: flush_every, or less so it looks a few times an epoch
        self.look_every = max(min(cfg.telemetry.flush_every, self.steps_per_epoch // LOOKS_PER_EPOCH), 1)
        self.epoch, self.step, self.best = 0, 0, {"acc_pgd": -1.0, "epoch": -1}
        self.stop_event: dict | None = None  # the event that stopped the trial (kept in the checkpoint)
        self.trigger = Trigger()  # when the training stream says "look now": a probe mid-epoch
        self.probed: dict | None = None  # metrics of the last triggered probe of this epoch
        self.run_dir = RunDir(self.out)
        self.checkpoint_dir = self.run_dir.checkpoints(self.id)
        self.trial_dir = self.run_dir.trial(self.id)
        self.log = EnergyLog(self.out, self.id, self.method.name, cfg.telemetry.flush_every)
        self.natural_every = cfg.telemetry.natural_every or self._natural_every()
        self.resumed = self._resume()

    def _natural_every(self) -> int:
        """Default steps between the extra no-grad forwards for f(x) (`telemetry.natural_every`).

        Sparse enough that the forward (about half of a step's forward-backward pass, of which there
        are one per attack step, SGLD step and update) costs <= NATURAL_COST of the steps, and dense
        enough to leave MIN_NATURAL_ROWS rows an epoch.
        """
        passes = (self.cfg.attack.steps if self.attack in MULTI_STEP else 1) + 1
        if self.method.uses_sgld:
            passes += self.cfg.method.sgld_steps + 1
        by_cost = math.ceil(0.5 / (NATURAL_COST * passes))
        return max(min(by_cost, self.steps_per_epoch // MIN_NATURAL_ROWS), 1)

    # --- one step -------------------------------------------------------------------------------
    def _attack(self, x: torch.Tensor, y: torch.Tensor):
        a = self.cfg.attack
        fn = ATTACKS[self.attack]
        if self.attack in MULTI_STEP:
            return fn(self.model, x, y, a.eps, self.alpha, steps=a.steps)
        if self.attack == "n_fgsm":
            return fn(self.model, x, y, a.eps, self.alpha, noise=a.noise)
        return fn(self.model, x, y, a.eps, self.alpha)

    def autocast(self) -> torch.autocast:
        """bf16 autocast for the network when `precision=bf16`; a no-op context for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def optimise(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> Step:
        """One optimiser step of the method: attack, logits, loss, update."""
        m, model = self.method, self.model
        for group in self.opt.param_groups:
            group["lr"] = lr
        model.train()
        if self.cfg.compile in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier graph outputs may be reused
        x = x.contiguous(memory_format=self.memory_format)
        with self.autocast():
            result = self._attack(x, y) if m.adversarial else None
            x_adv = result.x_adv if result else x
            logits_adv = model(x_adv)
            logits_nat = model(x) if m.uses_nat else (logits_adv if not m.adversarial else None)
            x_sgld = None
            if m.uses_sgld:
                p = self.cfg.method
                x_sgld = self.sgld.sample(model, len(x), p.sgld_steps, p.sgld_step_size, p.sgld_noise)
            logits = Logits(y=y, adv=logits_adv, nat=logits_nat, start=result.logits_start if result else None,
                            sgld=model(x_sgld) if x_sgld is not None else None)
            terms = m.loss(logits, self.cfg.method)  # losses cast logits to fp32 themselves
            natural = None
            if (logits_nat is None and not (result is not None and result.start_is_natural)
                    and self.step % self.natural_every == 0):
                # the log's f(x), from the same weights as f(x*): before the update
                with torch.no_grad(), frozen_norm_stats(model):
                    natural = model(x)
        self.opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        self.opt.step()
        return Step(x, y, logits, terms, result, natural)

    def telemetry(self, epoch: int, lr: float, s: Step) -> None:
        """Log the step's `batches` row (no host sync).

        The natural side needs f(x): free when the method computes it or its attack starts at x,
        otherwise the extra no-grad forward `optimise` made every `natural_every` steps.
        """
        logits_nat = s.logits.nat
        if logits_nat is None and s.attack is not None and s.attack.start_is_natural:
            logits_nat = s.attack.logits_start
        if logits_nat is None:
            logits_nat = s.natural
        terms = {c: v for c in TERM_COLUMNS if (v := getattr(s.terms, c)) is not None}
        logits_adv, logits_start = s.logits.adv, s.attack.logits_start if s.attack is not None else None
        if self.cfg.compile in CUDA_GRAPH_MODES:  # the log holds them for a block: a replay would overwrite them
            logits_adv, logits_nat, logits_start = (t if t is None else t.clone()
                                                    for t in (logits_adv, logits_nat, logits_start))
        self.log.log_step(epoch, self.step, lr, terms, s.y, logits_adv, logits_nat, logits_start)

    # --- epochs ---------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, progress: bool = False, stop: StopRule | None = None) -> str | None:
        """Train one epoch; returns a divergence reason if a NaN/inf loss was logged.

        At each flush the energy trigger reads the new rows; when it fires before the epoch's last step,
        the probe runs at once (`probe_now`) and `stop` decides on it: an event ends the epoch there
        (`self.stop_event`)."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # same order after a resume
        bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        self.probed = None
        start, end = epoch * self.steps_per_epoch, (epoch + 1) * self.steps_per_epoch
        with frozen_heap():
            for x, y, _ in batches(self.data.train, cfg.batch_size, shuffle=True, augment=self.augment,
                                   generator=gen):
                lr = lr_at(self.step, self.total_steps, cfg.optim.lr, cfg.schedule)
                self.telemetry(epoch, lr, self.optimise(x, y, lr))
                self.step += 1
                if bar is not None:
                    bar.update(1)
                if self.log.pending and (self.step - start) % self.look_every == 0:
                    self.log.flush()  # a short epoch: flush before flush_every steps, for the trigger
                if self.log.pending == 0:  # just flushed: one cheap host sync every look_every steps
                    if self.log.diverged():
                        return f"non-finite loss before step {self.step}"
                    if bar is not None:
                        last = self.log.last_flush
                        bar.set_postfix({k: f"{last[k].mean():.3f}" for k in ("loss", "acc_adv", "de") if k in last})
                    fires = self._watch(self.log.last_flush)
                    if fires and self.step < end and self.probe_now(epoch, fires[-1], stop):
                        break
        self._watch(self.log.flush())  # the epoch-end probe follows: a fire in the last block needs no other
        if bar is not None:
            bar.close()
        self.epoch_loss = self.log.epoch_loss(epoch)
        return f"non-finite loss in epoch {epoch}" if self.log.diverged() else None

    def _watch(self, rows: dict) -> list[Fire]:
        """The trigger's fires among flushed `batches` rows."""
        return self.trigger.update(rows["epoch"], rows["step"], rows) if rows else []

    def probe_now(self, epoch: int, fire: Fire, stop: StopRule | None) -> bool:
        """The PGD probe after a trigger fire, logged as an `epochs` probe row at this step (train_loss null:
        mid-epoch); True if `stop` ends the trial on it (its event then names the fire)."""
        if not len(self.data.probe):
            return False
        self.probed = self.evaluate_epoch(epoch, splits=("probe",)) | {"trigger": fire.evidence()}
        event = stop(self.probed) if stop else None
        if event is not None:
            self.stop_event = event
            named = fire.evidence() in event["evidence"]  # `detect` names it when the stop rule reads `batches`
            if event["kind"] == "co_pgd_probe" and event.get("step") == self.probed["step"] and not named:
                self.stop_event = event | {"evidence": f"{event['evidence']}; {fire.evidence()}"}  # as `detect` does
        return event is not None

    def evaluate_epoch(self, epoch: int, splits: tuple[str, ...] = ("probe", "val")) -> dict:
        """PGD evaluation of the probe and validation splits; writes `epochs` and `probes` rows.

        Only the probe split (`splits=("probe",)`) mid-epoch: its row has train_loss null and no
        `probes` rows (that table holds one row a sample and epoch)."""
        cfg, ev = self.cfg, self.cfg.eval
        lr = lr_at(max(self.step - 1, 0), self.total_steps, cfg.optim.lr, cfg.schedule)
        rows: dict[str, list] = {}
        metrics: dict = {"epoch": epoch, "step": self.step - 1}
        mid_epoch = "val" not in splits
        for split_name, split in (("probe", self.data.probe), ("val", self.data.val)):
            if split_name not in splits:
                continue
            per = evaluate_pgd(self.model, split, cfg.attack.eps, eval_alpha(cfg), ev.pgd_steps, ev.restarts,
                               ev.batch_size, cfg.seed)
            summary = per.summary()
            row = {"epoch": epoch, "step": self.step - 1, "split": split_name, **summary, "lr": lr,
                   "train_loss": None if mid_epoch else self.epoch_loss, "wall_time": time.time()}
            for k, v in row.items():
                rows.setdefault(k, []).append(v)
            metrics.update({f"{split_name}_{k}": v for k, v in summary.items()})
            if split_name == "probe" and not mid_epoch:
                n = len(per.ids)
                self.log.write("probes", {
                    "epoch": [epoch] * n, "sample_id": per.ids.numpy(), "label": per.labels.numpy().astype("int16"),
                    "e_nat": per.e_nat.numpy(), "e_adv": per.e_adv.numpy(), "e_nat_y": per.e_nat_y.numpy(),
                    "e_adv_y": per.e_adv_y.numpy(), "correct_nat": per.correct_nat.numpy(),
                    "correct_adv": per.correct_adv.numpy()})
        self.log.write("epochs", rows)
        if not mid_epoch:
            metrics["train_loss"] = self.epoch_loss
        return metrics

    # --- the whole trial ------------------------------------------------------------------------
    def run(self, on_epoch: EpochCallback | None = None, stop: StopRule | None = None,
            progress: bool = False) -> dict:
        """Train from the current epoch to `cfg.epochs`, or until `stop` returns an event; returns the
        summary also written to result.json (a stopped trial is evaluated on test like a finished one).

        A trial resumed after a stop stays stopped when given a `stop` rule; without one (`stop_on=[]`)
        it trains on from the stop."""
        if stop is None:
            self.stop_event = None
        self.run_dir.write_config(self.id, flatten(self.cfg) | {"trial_id": self.id})
        self.run_dir.write_result(self.id, self.result("running", None))
        started = time.time()
        status, reason = "finished", None
        for epoch in range(self.epoch, self.cfg.epochs):
            if self.stop_event is not None:  # resumed after a stop: the stop is final
                break
            reason = self.train_epoch(epoch, progress, stop)
            if reason:
                status = "diverged"
                break
            stopped_mid_epoch = self.stop_event is not None
            if stopped_mid_epoch:  # the probe stopped the trial: val of the model it stopped, as a whole epoch's
                metrics = self.evaluate_epoch(epoch, splits=("val",)) | self.probed
            else:
                metrics = self.evaluate_epoch(epoch)
            self.epoch = epoch + 1  # before either checkpoint: both hold the epochs done (a stopped one: begun)
            if metrics["val_acc_pgd"] > self.best["acc_pgd"]:
                self.best = {"acc_pgd": metrics["val_acc_pgd"], "epoch": epoch}
                self._save(self.checkpoint_dir / "best.pt", weights_only=True)
            # merge the parts the previous checkpoint committed (one epoch behind: never uncommitted parts,
            # so a resume never truncates a merged file); the last epoch's parts merge after the loop
            self.log.compact(self.committed)
            if not stopped_mid_epoch:
                self.stop_event = stop(metrics) if stop else None
            self._save(self.checkpoint_dir / "last.pt")
            self.committed = self.log.seqs()
            if on_epoch:
                on_epoch(metrics | {"stopped": self.stop_event is not None})
        self.log.compact(self.committed)  # the last epoch's parts too: a finished trial holds few files a table
        if self.stop_event is not None:
            e = self.stop_event
            status, reason = "stopped", f"{e['kind']} after epoch {e['epoch'] + 1}: {e['evidence']}"  # 1-based, as printed
            self.log.write_stop(e)  # one named part: a resume after a crash here rewrites it, never adds one
        summary = self.result(status, reason) | {"seconds": time.time() - started}
        if status in ("finished", "stopped"):
            self.run_dir.write_result(self.id, summary)  # why it ended, even if the process ends during the test
            summary |= self.final_evaluation()
        self.run_dir.write_result(self.id, summary)
        return summary

    def final_evaluation(self) -> dict:
        """Clean and PGD accuracy on the test split of the last model and of the best-val checkpoint."""
        cfg, ev = self.cfg, self.cfg.eval

        def test() -> dict:
            return evaluate_pgd(self.model, self.data.test, cfg.attack.eps, eval_alpha(cfg), ev.pgd_steps, ev.restarts,
                                ev.batch_size, cfg.seed).summary()

        last = test()
        result = {"test_n": last["n"], "test_acc_nat": last["acc_nat"], "test_acc_pgd": last["acc_pgd"]}
        best_path = self.checkpoint_dir / "best.pt"
        if best_path.exists():
            last_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(torch.load(best_path, map_location=self.device, weights_only=True)["model"])
            best = test()
            self.model.load_state_dict(last_state)  # the trial's model stays the last one
            result |= {"best_test_acc_nat": best["acc_nat"], "best_test_acc_pgd": best["acc_pgd"]}
        return result

    def result(self, status: str, reason: str | None) -> dict:
        """result.json's fields for `status` (workloads/run_dir.py STATUSES) so far."""
        return {"trial": self.id, "status": status, "reason": reason, "epochs_done": self.epoch,
                "steps_done": self.step, "best_val_acc_pgd": self.best["acc_pgd"], "best_epoch": self.best["epoch"],
                "stopped_by": None if self.stop_event is None else self.stop_event["kind"], "out": str(self.out)}

    # --- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": self.epoch,
                 "step": self.step, "best": self.best, "telemetry": self.log.seqs(),
                 "rng_cpu": torch.get_rng_state(), "trial": self.id, "stop_event": self.stop_event,
                 "trigger": self.trigger.state_dict()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.sgld is not None:
            state["sgld"] = self.sgld.state_dict()
        return state

    def _save(self, path: Path, weights_only: bool = False) -> None:
        """best.pt (weights only) or last.pt. `epoch` in both is the number of epochs done, i.e. the model is
        that of after epoch index `epoch - 1` (the `epochs` table's epoch; `best["epoch"]` is such an index)."""
        state = {"model": self.model.state_dict(), "epoch": self.epoch} if weights_only else self._state()
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def _load(self, path: Path) -> dict:
        try:
            return torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # truncated by a copy, a disk error, a crash outside atomic_write
            why = f"{type(e).__name__}: {e}".splitlines()[0][:120]
            other = "resume=best to restart from best.pt, or " if path.name == "last.pt" else ""
            raise CheckpointError(f"{path} is unreadable ({why}); run the same command with {other}resume=scratch "
                                  "to train the trial again from there (its logs are truncated to match), or put "
                                  "back a copy") from None

    def _resume(self) -> bool:
        """Start where `cfg.resume` says: last.pt if there is one (dropping telemetry written after it), best.pt
        (`_restart_from_best`), or from scratch (both checkpoints and every log row of the trial dropped)."""
        path, best = self.checkpoint_dir / "last.pt", self.checkpoint_dir / "best.pt"
        if self.cfg.resume == "scratch":
            path.unlink(missing_ok=True)
            best.unlink(missing_ok=True)
            self.log.clear_stop()
        if self.cfg.resume == "best" and best.exists():
            return self._restart_from_best(best)
        if path.exists():
            state = self._load(path)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
            self.stop_event = state.get("stop_event")
            if "trigger" in state:
                self.trigger.load_state_dict(state["trigger"])
            torch.set_rng_state(state["rng_cpu"])
            if "rng_cuda" in state:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
            if self.sgld is not None:
                self.sgld.load_state_dict(state["sgld"])
            seqs = state["telemetry"]
        else:
            seqs = {}
        for table, part in self.log.parts.items():
            part.seq = seqs.get(table, 0)
        self.log.truncate()
        self.committed = self.log.seqs()  # what the checkpoint holds: the next compaction's bound
        return path.exists()

    def _restart_from_best(self, best: Path) -> bool:
        """Go back to best.pt: its weights and epoch, the logs of the epochs before it (rows of later ones
        dropped, so each step is logged once), the trigger replayed over them; a fresh optimiser (best.pt holds
        no momentum) and RNG seeded from the epoch. last.pt goes: the next epoch writes it again."""
        state = self._load(best)
        self.model.load_state_dict(state["model"])
        self.epoch = state["epoch"]
        self.step = self.epoch * self.steps_per_epoch
        torch.manual_seed(self.cfg.seed * 100_003 + self.epoch)
        self.log.keep_before(self.epoch)
        val = self.log.read("epochs", ["epoch", "split", "acc_pgd"])
        accs = [a for e, s, a in zip(*(val[c].to_pylist() for c in ("epoch", "split", "acc_pgd")))
                if s == "val" and e == self.epoch - 1] if val is not None else []
        self.best = {"acc_pgd": accs[-1] if accs else -1.0, "epoch": self.epoch - 1}
        rows = self.log.read("batches", ["epoch", "step", *self.trigger.signals])
        if rows is not None:
            rows = rows.sort_by("step")
            self.trigger.update(rows["epoch"].to_numpy(), rows["step"].to_numpy(),
                                {s: rows[s].to_numpy(zero_copy_only=False) for s in self.trigger.signals})
        (self.checkpoint_dir / "last.pt").unlink(missing_ok=True)
        self.committed = self.log.seqs()
        return True


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
