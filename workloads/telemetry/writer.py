"""Writing the telemetry tables: device-side buffering, atomic Parquet parts, exactly-once resume.

Layout: `<out>/<table>/<trial_id>/part-<seq:06d>.parquet` (workloads/run_dir.py). A part is written
to a hidden temp name and renamed, so a reader never sees a partial file. The
checkpoint stores each table's next sequence number; on resume `truncate` deletes
the parts written after it (they are recomputed identically), so no (trial, step)
row is ever duplicated or missing.

Compaction: before each checkpoint, the parts the previous checkpoint committed and not yet
merged become one `part-<first:06d>-<last:06d>.parquet` (written atomically, then the parts it
covers are deleted). It counts as the parts first..last, so sequence numbers keep their meaning;
it only ever covers committed parts (last < a checkpoint's seq), so a resume never truncates it.
A file whose range lies inside another file's range in the same folder (a part left by a crash
between the merged file's rename and the deletes) is a duplicate: readers skip it
(`visible_parts`), and `truncate` and the next compaction delete it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from workloads.energy import delta_energy, joint_energy, marginal_energy
from workloads.losses import abnormal_adversarial
from workloads.run_dir import RunDir, atomic_write
from workloads.telemetry.schema import BATCHES, SCHEMA_VERSION, arrow_schema

# Columns of `batches` computed on the device, in the order of a computed row; the others come from the host.
TERM_COLUMNS = ("loss", "reg", "weat_w")  # the method's loss terms (`Terms`), null if it has none
ADV_COLUMNS = ("acc_adv", "e_adv", "e_adv_y")  # of f(x*): every step
NAT_COLUMNS = ("acc_nat", "e_nat", "e_nat_y", "de", "de_y", "de_std")  # need f(x): null on steps without it
START_COLUMNS = ("aae_frac",)  # need f(x0) at the attack's start: every step of an adversarial method
DEVICE_COLUMNS = TERM_COLUMNS + ADV_COLUMNS + NAT_COLUMNS + START_COLUMNS
BLOCK = 50  # steps held before their energies are computed together


def block_stats(logits: Tensor, y: Tensor) -> Tensor:
    """Per-step batch means of accuracy, E and E(.,y) of f(x*) and f(x), and of the delta energies.

    logits [steps, 2 (x*, x), B, C] and labels y [steps, B], where label -1 marks padding (the
    short last batch of an epoch); padded logits may hold anything, NaN included.
    Returns [steps, len(ADV_COLUMNS + NAT_COLUMNS)] in that column order.
    """
    with torch.no_grad():
        real = y >= 0  # [steps, B]
        y = y.clamp(min=0)[:, None].expand(logits.shape[:-1])
        per_sample = torch.stack([(logits.argmax(-1) == y).float(), marginal_energy(logits),
                                  joint_energy(logits, y)], dim=2)  # [steps, x* | x, acc | E | E(.,y), B]
        de = delta_energy(per_sample[:, 1, 1:], per_sample[:, 0, 1:])  # [steps, dE(x) | dE(x,y), B]

        def mean(v: Tensor) -> Tensor:  # v [steps, ..., B]: the mean over each step's real samples
            r = real.view(len(real), *[1] * (v.dim() - 2), -1)
            return torch.where(r, v, 0).sum(-1) / r.sum(-1)

        de_mean = mean(de)
        de_std = mean((de[:, 0] - de_mean[:, :1]) ** 2).sqrt()
        return torch.cat([mean(per_sample).flatten(1), de_mean, de_std[:, None]], dim=1)


def abnormal_share(logits_adv: Tensor, logits_start: Tensor, y: Tensor) -> Tensor:
    """Per-step share of abnormal adversarial examples (Lin et al. 2024; DER's AAE mask, the same
    `losses.abnormal_adversarial`): CE(f(x*)) < CE(f(x0)).

    logits [steps, B, C] and labels y [steps, B] with -1 marking padding; returns [steps].
    """
    with torch.no_grad():
        real = y >= 0
        abnormal = abnormal_adversarial(logits_start.flatten(0, 1), logits_adv.flatten(0, 1), y.clamp(min=0).flatten())
        return (abnormal.view(y.shape) * real).sum(-1) / real.sum(-1)


def part_range(name: str) -> tuple[int, int] | None:
    """The part numbers a file covers, from its name: `part-000007.parquet` -> (7, 7),
    `part-000004-000009.parquet` -> (4, 9); None for a hidden or a named part (`part-stop`)."""
    if name.startswith((".", "_")) or not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    bounds = name[5:-8].split("-")
    if len(bounds) not in (1, 2) or not all(b.isdigit() for b in bounds):
        return None
    first, last = int(bounds[0]), int(bounds[-1])
    return (first, last) if first <= last else None


def covered_parts(paths: list[Path]) -> set[Path]:
    """Those of `paths` (files of one folder) whose part range lies inside another's: duplicates."""
    ranged = sorted(((r, p) for p in paths if (r := part_range(p.name))), key=lambda rp: (rp[0][0], -rp[0][1]))
    covered, reach = set(), -1
    for (first, last), path in ranged:  # by first part, the widest first: covered iff an earlier one reaches it
        if last <= reach:
            covered.add(path)
        reach = max(reach, last)
    return covered


def visible_parts(paths: list[Path]) -> list[Path]:
    """`paths` without the duplicates `covered_parts` finds, folder by folder."""
    folders: dict[Path, list[Path]] = {}
    for p in paths:
        folders.setdefault(p.parent, []).append(p)
    hidden = set().union(*(covered_parts(ps) for ps in folders.values()))
    return [p for p in paths if p not in hidden]


def _pad(t: Tensor, rows: int, fill: float = 0.0) -> Tensor:
    """t [n, ...] with `fill` rows appended up to `rows`."""
    return t if len(t) == rows else torch.cat([t, t.new_full((rows - len(t), *t.shape[1:]), fill)])


class PartWriter:
    """Writes one table of one trial as numbered Parquet parts, atomically."""

    def __init__(self, out: str | os.PathLike, table: str, trial: str, seq: int | None = None):
        """`seq`: the next part number; None appends after the parts already on disk (events, evals)."""
        self.dir = RunDir(out).table(table, trial)
        self.schema = arrow_schema(table)
        self.table, self.seq = table, self._next_free() if seq is None else seq

    def _next_free(self) -> int:
        ranges = [r for p in self.dir.glob("part-*.parquet") if (r := part_range(p.name))]
        return max((last for _, last in ranges), default=-1) + 1

    def write(self, columns: dict[str, Any], name: str | None = None) -> Path | None:
        """Write one part from a dict of equal-length columns (missing columns become null); its path.

        `name` writes `part-<name>.parquet` instead of the next numbered part (idempotent: a trial's stop)."""
        n = len(next(iter(columns.values())))
        if n == 0:
            return None
        arrays = [pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(n, f.type)
                  for f in self.schema]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        final = atomic_write(self.named(name or f"{self.seq:06d}"),
                             lambda tmp: pq.write_table(table, tmp))
        if name is None:
            self.seq += 1
        return final

    def keep_before(self, epoch: int) -> None:
        """Drop the rows of epochs >= `epoch` from every file of the table (each rewritten atomically, or deleted
        when nothing is left); numbered parts then go on after the last file left."""
        if not self.dir.is_dir():
            return
        self._drop_temporary()
        for path in covered_parts(list(self._numbered())):  # left by a crash during a compaction
            path.unlink()
        for path in sorted(self.dir.glob("part-*.parquet")):
            table = pq.read_table(path)
            kept = table.filter(pc.less(table["epoch"], epoch))
            if kept.num_rows == table.num_rows:
                continue
            if kept.num_rows == 0:
                path.unlink()
            else:
                atomic_write(path, lambda tmp: pq.write_table(kept, tmp))
        self.seq = self._next_free()

    def _drop_temporary(self) -> None:
        """Delete the temporary files of interrupted writes (hidden names, atomic_write)."""
        for path in self.dir.iterdir():
            if path.name.startswith("."):
                path.unlink()

    def named(self, name: str) -> Path:
        """The file of a named part (`write(..., name=)`)."""
        return self.dir / f"part-{name}.parquet"

    def _numbered(self) -> dict[Path, tuple[int, int]]:
        return {p: r for p in self.dir.iterdir() if (r := part_range(p.name))} if self.dir.is_dir() else {}

    def truncate(self) -> None:
        """Delete what was written after the last checkpoint (parts and merged files from self.seq on, temp
        files) and the parts a merged file covers (left by a crash during a compaction)."""
        if not self.dir.is_dir():
            return
        self._drop_temporary()
        numbered = self._numbered()
        for path, (first, last) in numbered.items():
            if first >= self.seq:
                path.unlink()
            elif last >= self.seq:  # compaction merges only committed parts: a checkpoint went back in time
                raise RuntimeError(f"{path} covers parts {first}..{last}, across the checkpoint's next part "
                                   f"{self.seq}: it holds rows from before and after the checkpoint")
        for path in covered_parts([p for p, (first, _) in numbered.items() if first < self.seq]):
            path.unlink()

    def compact(self, upto: int) -> Path | None:
        """Merge the committed files (parts numbered below `upto`, a checkpoint's seq) into few: the parts no
        merged file holds yet become one `part-<first>-<last>.parquet`, then, as in a binary counter, the
        newest two files merge while the older spans no more parts than the newer. A trial of n epochs so
        holds about log2(n) + 1 files a table; every row is rewritten about log2(n) times. The merged file
        is written before its sources are deleted (a crash in between leaves files it covers: readers skip
        them, the next compaction or a resume deletes them). Returns the last file written, or None."""
        numbered = self._numbered()
        for path in covered_parts(list(numbered)):  # leftovers of a crash during an earlier compaction
            path.unlink()
            del numbered[path]
        files = sorted(((r, path) for path, r in numbered.items() if r[1] < upto), key=lambda rp: rp[0])
        run = 0  # the newest parts that no merged file holds, contiguous
        while run < len(files) and files[-1 - run][0][0] == files[-1 - run][0][1] and (
                run == 0 or files[-run][0][0] == files[-1 - run][0][1] + 1):
            run += 1
        written = None
        if run >= 2:
            if (merged := self._merge(files[-run:])) is None:
                return None
            files[-run:], written = [merged], merged[1]
        while len(files) >= 2:
            (older, _), (newer, _) = files[-2], files[-1]
            if older[1] + 1 != newer[0] or older[1] - older[0] > newer[1] - newer[0]:
                break
            if (merged := self._merge(files[-2:])) is None:
                break
            files[-2:], written = [merged], merged[1]
        return written

    def _merge(self, group: list[tuple[tuple[int, int], Path]]) -> tuple[tuple[int, int], Path] | None:
        """One file of `group`'s contiguous files, written atomically, then the group deleted; None (nothing
        done) if a file has an earlier schema version (those stay as they are)."""
        tables = [pq.read_table(path) for _, path in group]
        if not all(t.schema.equals(self.schema) for t in tables):
            return None
        first, last = group[0][0][0], group[-1][0][1]
        merged = pa.concat_tables(tables)
        final = atomic_write(self.dir / f"part-{first:06d}-{last:06d}.parquet", lambda tmp: pq.write_table(merged, tmp))
        for _, path in group:  # a crash in here leaves files the merged one covers: readers skip them
            path.unlink()
        return (first, last), final


class EnergyLog:
    """A trial's telemetry: per-step rows computed on the device, epoch and probe rows written directly.

    A step only hands over its logits, labels and loss terms (no copy, no kernel); every BLOCK
    steps their energies are computed together (a few batched kernels instead of a few dozen
    small ones per step), and every `flush_every` steps the rows go to Parquet in one
    device->host copy. The caller must not modify the tensors it logs (CUDA-graph outputs are
    overwritten by the next replay: clone them first).
    """

    def __init__(self, out: str | os.PathLike, trial: str, method: str, flush_every: int):
        self.out = out
        self.parts = {t: PartWriter(out, t, trial, 0) for t in ("batches", "epochs", "probes")}
        self.trial, self.method, self.flush_every = trial, method, flush_every
        self.held: list[tuple[dict[str, Tensor], Tensor, Tensor, Tensor | None, Tensor | None]] = []  # not computed
        self.blocks: list[Tensor] = []  # computed rows [steps, DEVICE_COLUMNS] not yet flushed
        self.host: dict[str, list] = {"epoch": [], "step": [], "lr": [], "wall_time": [], "terms": [],
                                      "natural": [], "start": []}
        self.last_flush: dict[str, Any] = {}
        self.losses: dict[int, list[np.ndarray]] = {}  # epoch -> flushed training losses
        self.bad = False  # a non-finite loss in a flushed part (checked on the host copy, no extra sync)

    @property
    def pending(self) -> int:
        return len(self.host["step"])

    def log_step(self, epoch: int, step: int, lr: float, terms: dict[str, Tensor], y: Tensor,
                 logits_adv: Tensor, logits_nat: Tensor | None = None, logits_start: Tensor | None = None) -> None:
        """Log one `batches` row: the loss terms (0-dim, keys of TERM_COLUMNS), the labels and the
        logits of f(x*), of f(x) when measured this step, and of the attack's start f(x0); no host sync."""
        detach = lambda t: None if t is None else t.detach()  # noqa: E731
        self.held.append(({c: v.detach() for c, v in terms.items()}, y, logits_adv.detach(), detach(logits_nat),
                          detach(logits_start)))
        for key, value in (("epoch", epoch), ("step", step), ("lr", lr), ("wall_time", time.time()),
                           ("terms", tuple(terms)), ("natural", logits_nat is not None),
                           ("start", logits_start is not None)):
            self.host[key].append(value)
        if len(self.held) == BLOCK:
            self._compute()
        if self.pending == self.flush_every:
            self.flush()

    def _compute(self) -> None:
        """The DEVICE_COLUMNS rows of the held steps, as one block."""
        if not self.held:
            return
        terms, ys, advs, nats, starts = zip(*self.held)
        b = max(len(y) for y in ys)  # host ints: no sync
        adv = torch.stack([_pad(a.float(), b) for a in advs])
        # f(x*) stands in for a missing f(x) or f(x0); those values are masked to null at the flush
        nat = torch.stack([_pad((a if n is None else n).float(), b) for a, n in zip(advs, nats)])
        start = torch.stack([_pad((a if s is None else s).float(), b) for a, s in zip(advs, starts)])
        y = torch.stack([_pad(y, b, -1) for y in ys])
        nan = adv.new_full((), float("nan"))
        values = torch.stack([torch.stack([t.get(c, nan).float() for c in TERM_COLUMNS]) for t in terms])
        self.blocks.append(torch.cat([values, block_stats(torch.stack([adv, nat], dim=1), y),
                                      abnormal_share(adv, start, y)[:, None]], dim=1))
        self.held = []

    def flush(self) -> dict[str, np.ndarray]:
        """Write logged steps as one `batches` part (one device->host copy); returns its columns."""
        self._compute()
        n = self.pending
        if n == 0:
            return {}
        values = torch.cat(self.blocks).cpu().numpy()
        loss = values[:, DEVICE_COLUMNS.index("loss")]
        self.bad = self.bad or not np.isfinite(loss).all()
        epochs = np.array(self.host["epoch"])
        for e in np.unique(epochs):
            self.losses.setdefault(int(e), []).append(loss[epochs == e])
        natural, start = np.array(self.host["natural"]), np.array(self.host["start"])
        logged = {c: np.array([c in keys for keys in self.host["terms"]]) for c in TERM_COLUMNS}
        logged |= {c: np.ones(n, bool) for c in ADV_COLUMNS} | {c: natural for c in NAT_COLUMNS}
        logged |= {c: start for c in START_COLUMNS}
        columns: dict[str, Any] = {c: np.ma.MaskedArray(values[:, i], mask=~logged[c])
                                   for i, c in enumerate(DEVICE_COLUMNS) if logged[c].any()}
        columns.update(epoch=self.host["epoch"], step=self.host["step"], lr=self.host["lr"],
                       wall_time=self.host["wall_time"], schema_version=[SCHEMA_VERSION] * n,
                       trial=[self.trial] * n, method=[self.method] * n)
        self.parts["batches"].write(columns)
        self.last_flush = columns
        self.host = {k: [] for k in self.host}
        self.blocks = []
        return columns

    def epoch_loss(self, epoch: int) -> float:
        """Mean training loss over the epoch's flushed steps (NaN if one was not finite)."""
        return float(np.concatenate(self.losses.pop(epoch, [np.array([np.nan])])).mean())

    def diverged(self) -> bool:
        """True if a flushed loss was NaN/inf (call after a flush: at flush or epoch boundaries)."""
        return self.bad

    def write(self, table: str, columns: dict[str, Any]) -> None:
        """Write rows of `epochs` or `probes` now, adding the key columns."""
        n = len(next(iter(columns.values())))
        keys = {"schema_version": [SCHEMA_VERSION] * n, "trial": [self.trial] * n}
        if table == "epochs":
            keys["method"] = [self.method] * n
        self.parts[table].write({**keys, **columns})

    def write_stop(self, event: dict) -> None:
        """The `events` row of the detector event that stopped this trial (action 'stopped'), written once."""
        row = {k: [event.get(k)] for k in ("kind", "epoch", "step", "score", "evidence")}
        row |= {"schema_version": [SCHEMA_VERSION], "trial": [self.trial], "action": ["stopped"]}
        PartWriter(self.out, "events", self.trial, 0).write(row, name="stop")

    def clear_stop(self) -> None:
        """Delete the stop's `events` row (a trial trained again from before its stop)."""
        PartWriter(self.out, "events", self.trial, 0).named("stop").unlink(missing_ok=True)

    def keep_before(self, epoch: int) -> None:
        """Drop every row of epochs >= `epoch` (a restart from an earlier checkpoint), and the stop."""
        for part in self.parts.values():
            part.keep_before(epoch)
        self.clear_stop()

    def read(self, table: str, columns: list[str]) -> pa.Table | None:
        """`columns` of the trial's rows of `table` written so far (files a merged one covers skipped)."""
        files = visible_parts(sorted(self.parts[table].dir.glob("part-*.parquet")))
        return pa.concat_tables([pq.read_table(p, columns=columns) for p in files]) if files else None

    def seqs(self) -> dict[str, int]:
        """Next part number of each table (stored in the checkpoint)."""
        return {t: p.seq for t, p in self.parts.items()}

    def truncate(self) -> None:
        """Drop parts written after the checkpoint these sequence numbers came from."""
        for part in self.parts.values():
            part.truncate()

    def compact(self, upto: dict[str, int]) -> None:
        """Compact each table's files committed by the checkpoint that stored `upto` (`seqs()`): PartWriter.compact."""
        for table, part in self.parts.items():
            part.compact(upto.get(table, 0))


assert set(DEVICE_COLUMNS) <= {c for c, *_ in BATCHES}
