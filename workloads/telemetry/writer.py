"""Writing the telemetry tables: device-side buffering, atomic Parquet parts, exactly-once resume.

Layout: `<out>/<table>/trial=<trial_id>/part-<seq:06d>.parquet`. A part is written
to a hidden temp name and renamed, so a reader never sees a partial file. The
checkpoint stores each table's next sequence number; on resume `truncate` deletes
the parts written after it (they are recomputed identically), so no (trial, step)
row is ever duplicated or missing.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from workloads.energy import delta_energy, joint_energy, marginal_energy
from workloads.telemetry.schema import BATCHES, SCHEMA_VERSION, arrow_schema

# Columns of `batches` computed on the device, in buffer order; the others come from the host.
TERM_COLUMNS = ("loss", "reg", "weat_w", "aae_frac")  # the method's loss terms (`Terms`), null if it has none
ADV_COLUMNS = ("acc_adv", "e_adv", "e_adv_y")  # of f(x*): every step
NAT_COLUMNS = ("acc_nat", "e_nat", "e_nat_y", "de", "de_y", "de_std")  # need f(x): null on steps without it
DEVICE_COLUMNS = TERM_COLUMNS + ADV_COLUMNS + NAT_COLUMNS
BLOCK = 50  # steps of logits held on the device before their energies are computed


def block_stats(logits: Tensor, y: Tensor, size: Tensor) -> Tensor:
    """Per-step batch means of accuracy, E and E(.,y) of f(x*) and f(x), and of the delta energies.

    logits [steps, 2 (x*, x), B, C], labels y [steps, B], size [steps]: samples of each step
    (the rest of the B slots are padding). Returns [steps, len(ADV_COLUMNS + NAT_COLUMNS)].
    """
    with torch.no_grad():
        y = y[:, None].expand(logits.shape[:-1])
        per_sample = torch.stack([(logits.argmax(-1) == y).float(), marginal_energy(logits),
                                  joint_energy(logits, y)], dim=2)  # [steps, x* | x, acc | E | E(.,y), B]
        de = delta_energy(per_sample[:, 1, 1:], per_sample[:, 0, 1:])  # [steps, dE(x) | dE(x,y), B]
        real = torch.arange(logits.shape[2], device=logits.device) < size[:, None]  # [steps, B]

        def mean(v: Tensor) -> Tensor:  # v [steps, ..., B] over the real samples (padding may hold NaN)
            r = real.view(len(real), *[1] * (v.dim() - 2), -1)
            return torch.where(r, v, 0).sum(-1) / r.sum(-1)

        de_mean = mean(de)
        de_std = mean((de[:, 0] - de_mean[:, :1]) ** 2).sqrt()
        return torch.cat([mean(per_sample).flatten(1), de_mean, de_std[:, None]], dim=1)


class PartWriter:
    """Writes one table of one trial as numbered Parquet parts, atomically."""

    def __init__(self, out: str | os.PathLike, table: str, trial: str, seq: int | None = None):
        """`seq`: the next part number; None appends after the parts already on disk (events, evals)."""
        self.dir = Path(out) / table / f"trial={trial}"
        self.schema = arrow_schema(table)
        self.table, self.seq = table, self._next_free() if seq is None else seq

    def _next_free(self) -> int:
        stems = [p.stem.removeprefix("part-") for p in self.dir.glob("part-*.parquet")]
        return max((int(s) for s in stems if s.isdigit()), default=-1) + 1

    def write(self, columns: dict[str, Any]) -> Path | None:
        """Write one part from a dict of equal-length columns (missing columns become null); its path."""
        n = len(next(iter(columns.values())))
        if n == 0:
            return None
        arrays = [pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(n, f.type)
                  for f in self.schema]
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"part-{self.seq:06d}.parquet"
        tmp = self.dir / f".part-{self.seq:06d}.parquet.tmp"
        pq.write_table(pa.Table.from_arrays(arrays, schema=self.schema), tmp)
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.seq += 1
        return final

    def truncate(self) -> None:
        """Delete parts numbered >= self.seq and leftover temp files (written after the last checkpoint)."""
        if not self.dir.is_dir():
            return
        for path in self.dir.iterdir():
            stem = path.name.lstrip(".").split(".")[0]
            if path.name.startswith(".") or (stem.startswith("part-") and int(stem[5:]) >= self.seq):
                path.unlink()


class EnergyLog:
    """A trial's telemetry: per-step rows buffered on the device, epoch and probe rows written directly.

    A step only copies its logits, labels and loss terms into device buffers; the energies of
    up to BLOCK steps are computed together (a few batched kernels instead of a few dozen small
    ones per step), and every `flush_every` steps the rows go to Parquet in one device->host copy.
    """

    def __init__(self, out: str | os.PathLike, trial: str, method: str, flush_every: int,
                 device: torch.device | str, batch_size: int, num_classes: int):
        self.parts = {t: PartWriter(out, t, trial, 0) for t in ("batches", "epochs", "probes")}
        self.trial, self.method, self.flush_every = trial, method, flush_every
        self.rows = torch.full((flush_every, len(DEVICE_COLUMNS)), float("nan"), device=device)
        block = min(flush_every, BLOCK)
        self.logits = torch.zeros(block, 2, batch_size, num_classes, device=device)
        self.labels = torch.zeros(block, batch_size, dtype=torch.long, device=device)
        self.size = torch.full((block,), batch_size, device=device)
        self.held = 0  # steps whose logits wait in the block
        self.host: dict[str, list] = {"epoch": [], "step": [], "lr": [], "wall_time": [], "terms": [],
                                      "natural": []}
        self.last_flush: dict[str, Any] = {}
        self._stats = torch.tensor([DEVICE_COLUMNS.index(c) for c in ADV_COLUMNS + NAT_COLUMNS], device=device)
        self.bad = False  # a non-finite loss in a flushed part (checked on the host copy, no extra sync)

    @property
    def pending(self) -> int:
        return len(self.host["step"])

    def log_step(self, epoch: int, step: int, lr: float, terms: dict[str, Tensor], y: Tensor,
                 logits_adv: Tensor, logits_nat: Tensor | None = None) -> None:
        """Buffer one `batches` row: the loss terms (0-dim, keys of TERM_COLUMNS) and the logits of
        f(x*) and, when measured this step, f(x); no host sync."""
        for c, value in terms.items():
            self.rows[self.pending, DEVICE_COLUMNS.index(c)] = value.detach()
        i, n = self.held, len(y)
        self.logits[i, 0, :n] = logits_adv.detach()
        if logits_nat is not None:
            self.logits[i, 1, :n] = logits_nat.detach()
        self.labels[i, :n] = y
        if n != self.labels.shape[1]:  # a short last batch (n is a host int: no sync)
            self.size[i] = n
        for key, value in (("epoch", epoch), ("step", step), ("lr", lr), ("wall_time", time.time()),
                           ("terms", tuple(terms)), ("natural", logits_nat is not None)):
            self.host[key].append(value)
        self.held += 1
        if self.held == len(self.logits):
            self._reduce()
        if self.pending == self.flush_every:
            self.flush()

    def _reduce(self) -> None:
        """Compute the energy columns of the held steps into their rows."""
        k, first = self.held, self.pending - self.held
        if k:
            self.rows[first:first + k, self._stats] = block_stats(self.logits[:k], self.labels[:k], self.size[:k])
            self.size.fill_(self.labels.shape[1])
            self.held = 0

    def flush(self) -> dict[str, np.ndarray]:
        """Write buffered steps as one `batches` part (one device->host copy); returns its columns."""
        self._reduce()
        n = self.pending
        if n == 0:
            return {}
        values = self.rows[:n].cpu().numpy()
        self.bad = self.bad or not np.isfinite(values[:, DEVICE_COLUMNS.index("loss")]).all()
        natural = np.array(self.host["natural"])
        logged = {c: np.array([c in keys for keys in self.host["terms"]]) for c in TERM_COLUMNS}
        logged |= {c: np.ones(n, bool) for c in ADV_COLUMNS} | {c: natural for c in NAT_COLUMNS}
        columns: dict[str, Any] = {c: np.ma.MaskedArray(values[:, i], mask=~logged[c])
                                   for i, c in enumerate(DEVICE_COLUMNS) if logged[c].any()}
        columns.update(epoch=self.host["epoch"], step=self.host["step"], lr=self.host["lr"],
                       wall_time=self.host["wall_time"], schema_version=[SCHEMA_VERSION] * n,
                       trial=[self.trial] * n, method=[self.method] * n)
        self.parts["batches"].write(columns)
        self.last_flush = columns
        self.host = {k: [] for k in self.host}
        self.rows.fill_(float("nan"))
        return columns

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

    def seqs(self) -> dict[str, int]:
        """Next part number of each table (stored in the checkpoint)."""
        return {t: p.seq for t, p in self.parts.items()}

    def truncate(self) -> None:
        """Drop parts written after the checkpoint these sequence numbers came from."""
        for part in self.parts.values():
            part.truncate()


assert set(DEVICE_COLUMNS) <= {c for c, *_ in BATCHES}
