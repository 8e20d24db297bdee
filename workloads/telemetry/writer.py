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
DEVICE_COLUMNS = ["loss", "acc_nat", "acc_adv", "e_nat", "e_adv", "e_nat_y", "e_adv_y", "de", "de_y", "de_std",
                  "reg", "weat_w", "aae_frac"]
OPTIONAL = {"reg", "weat_w", "aae_frac"}  # null when the method has no such term


def batch_stats(logits_nat: Tensor, logits_adv: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Batch means of accuracies, energies and delta energies (0-dim tensors, no host sync)."""
    with torch.no_grad():
        e_nat, e_adv = marginal_energy(logits_nat), marginal_energy(logits_adv)
        e_nat_y, e_adv_y = joint_energy(logits_nat, y), joint_energy(logits_adv, y)
        de = delta_energy(e_nat, e_adv)
        return {
            "acc_nat": (logits_nat.argmax(1) == y).float().mean(),
            "acc_adv": (logits_adv.argmax(1) == y).float().mean(),
            "e_nat": e_nat.mean(), "e_adv": e_adv.mean(), "e_nat_y": e_nat_y.mean(), "e_adv_y": e_adv_y.mean(),
            "de": de.mean(), "de_y": delta_energy(e_nat_y, e_adv_y).mean(),
            "de_std": de.std(correction=0),
        }


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
    """A trial's telemetry: per-step rows buffered on the device, epoch and probe rows written directly."""

    def __init__(self, out: str | os.PathLike, trial: str, method: str, flush_every: int,
                 device: torch.device | str, seqs: dict[str, int] | None = None):
        seqs = seqs or {}
        self.parts = {t: PartWriter(out, t, trial, seqs.get(t, 0)) for t in ("batches", "epochs", "probes")}
        self.trial, self.method, self.flush_every = trial, method, flush_every
        self.buffer = torch.full((flush_every, len(DEVICE_COLUMNS)), float("nan"), device=device)
        self.host: dict[str, list] = {"epoch": [], "step": [], "lr": [], "wall_time": []}
        self.present: set[str] = set()
        self.last_flush: dict[str, Any] = {}
        self._index: dict[tuple[str, ...], Tensor] = {}
        self.bad = False  # a non-finite loss in a flushed part (checked on the host copy, no extra sync)

    @property
    def pending(self) -> int:
        return len(self.host["step"])

    def log_step(self, epoch: int, step: int, lr: float, stats: dict[str, Tensor]) -> None:
        """Buffer one `batches` row; `stats` are 0-dim device tensors keyed by DEVICE_COLUMNS."""
        keys = tuple(c for c in DEVICE_COLUMNS if c in stats)
        if keys not in self._index:  # rows are pre-filled with NaN; write only the columns given
            self._index[keys] = torch.tensor([DEVICE_COLUMNS.index(c) for c in keys], device=self.buffer.device)
        self.buffer[self.pending, self._index[keys]] = torch.stack([stats[c].detach().float() for c in keys])
        self.present.update(stats)
        for key, value in (("epoch", epoch), ("step", step), ("lr", lr), ("wall_time", time.time())):
            self.host[key].append(value)
        if self.pending == self.flush_every:
            self.flush()

    def flush(self) -> dict[str, np.ndarray]:
        """Write buffered steps as one `batches` part (one device->host copy); returns its columns."""
        n = self.pending
        if n == 0:
            return {}
        values = self.buffer[:n].cpu().numpy()
        self.bad = self.bad or not np.isfinite(values[:, DEVICE_COLUMNS.index("loss")]).all()
        columns: dict[str, Any] = {c: values[:, i] for i, c in enumerate(DEVICE_COLUMNS)
                                   if c not in OPTIONAL or c in self.present}
        columns.update(self.host, schema_version=[SCHEMA_VERSION] * n, trial=[self.trial] * n,
                       method=[self.method] * n)
        self.parts["batches"].write(columns)
        self.last_flush = columns
        self.host = {k: [] for k in self.host}
        self.buffer.fill_(float("nan"))
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


assert [c for c, *_ in BATCHES if c in DEVICE_COLUMNS] == DEVICE_COLUMNS
