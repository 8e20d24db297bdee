"""The Parquet tables a trial writes: column names, types and meanings.

One source of truth for the writer (workloads), the readers (analysis) and the
README's schema section. Bump `SCHEMA_VERSION` when a column is added; readers
scan with these schemas so older files read the new columns as null.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
EVENT_KINDS = ("co_energy", "co_pgd_probe", "ro", "nan")  # the detectors of analysis/detectors.py, `events.kind`

# (column, arrow type, meaning)
Column = tuple[str, pa.DataType, str]

_KEYS: list[Column] = [
    ("schema_version", pa.int16(), "version of this schema the row was written with"),
    ("trial", pa.string(), "trial id (also the name of the trial's folder in each table)"),
    ("method", pa.string(), "registered AT method name"),
    ("epoch", pa.int32(), "0-based epoch"),
    ("step", pa.int64(), "0-based global optimiser step (epoch tables: the last step of the epoch, or the step of "
                         "a probe the energy trigger ran mid-epoch)"),
]

_ENERGIES: list[Column] = [
    ("e_nat", pa.float32(), "mean marginal energy E(x) = -logsumexp f(x)"),
    ("e_adv", pa.float32(), "mean marginal energy E(x*) of the adversarial examples"),
    ("e_nat_y", pa.float32(), "mean joint energy E(x,y) = -f(x)[y]"),
    ("e_adv_y", pa.float32(), "mean joint energy E(x*,y)"),
    ("de", pa.float32(), "mean delta energy dE(x) = E(x) - E(x*)"),
    ("de_y", pa.float32(), "mean delta joint energy dE(x,y) = E(x,y) - E(x*,y)"),
    ("de_std", pa.float32(), "standard deviation of dE(x) over the samples"),
]

BATCHES: list[Column] = _KEYS + [
    ("lr", pa.float32(), "learning rate used for this step"),
    ("loss", pa.float32(), "training loss of the step"),
    ("acc_nat", pa.float32(), "accuracy on the natural batch; null, with the x-side energies and dE columns, "
                              "on steps that did not compute f(x) (`telemetry.natural_every`)"),
    ("acc_adv", pa.float32(), "accuracy on the training adversarial batch"),
    *_ENERGIES,
    ("reg", pa.float32(), "method regulariser value (TRADES/MART/WEAT KL term, DER hinge, JEAT SGLD term); null if none"),
    ("weat_w", pa.float32(), "WEAT: mean sample weight 1/softplus(|E(x)|); null for other methods"),
    ("aae_frac", pa.float32(), "share of abnormal adversarial examples (Lin et al. 2024): samples whose loss "
                                "CE(x*) is below CE(x0) at the attack's start; null without an attack"),
    ("wall_time", pa.float64(), "host UNIX time when the step was issued (GPU work may finish later)"),
]

EPOCHS: list[Column] = _KEYS + [
    ("split", pa.string(), "'probe' (fixed training subset) or 'val' (held-out validation)"),
    ("n", pa.int32(), "samples evaluated"),
    ("acc_nat", pa.float32(), "clean accuracy"),
    ("acc_pgd", pa.float32(), "accuracy under the evaluation PGD attack (the classic CO rule reads split='probe')"),
    *_ENERGIES,
    ("lr", pa.float32(), "learning rate at the end of the epoch"),
    ("train_loss", pa.float32(), "mean training loss over the epoch's steps; null on a probe row the energy trigger "
                                 "ran mid-epoch (workloads/telemetry/trigger.py)"),
    ("wall_time", pa.float64(), "host UNIX time at the end of the evaluation"),
]

PROBES: list[Column] = [
    ("schema_version", pa.int16(), "version of this schema the row was written with"),
    ("trial", pa.string(), "trial id"),
    ("epoch", pa.int32(), "0-based epoch"),
    ("sample_id", pa.int64(), "index of the sample in the original training set"),
    ("label", pa.int16(), "true class"),
    ("e_nat", pa.float32(), "E(x)"),
    ("e_adv", pa.float32(), "E(x*) under the evaluation PGD attack"),
    ("e_nat_y", pa.float32(), "E(x,y)"),
    ("e_adv_y", pa.float32(), "E(x*,y)"),
    ("correct_nat", pa.bool_(), "prediction on x is right"),
    ("correct_adv", pa.bool_(), "prediction on x* is right"),
]

EVENTS: list[Column] = [
    ("schema_version", pa.int16(), "version of this schema the row was written with"),
    ("trial", pa.string(), "trial id"),
    ("kind", pa.string(), "detector name (co_energy, co_pgd_probe, ro, nan)"),
    ("epoch", pa.int32(), "epoch of the onset"),
    ("step", pa.int64(), "global step of the onset (null if epoch-level)"),
    ("score", pa.float64(), "detector statistic at the onset"),
    ("evidence", pa.string(), "human-readable reason"),
    ("action", pa.string(), "'stopped' when the online stopper ended the trial, else 'logged'"),
]

EVALS: list[Column] = [
    ("schema_version", pa.int16(), "version of this schema the row was written with"),
    ("trial", pa.string(), "trial id"),
    ("attack", pa.string(), "'clean', 'pgdK' (K steps), 'pgdK-targeted', 'pgd-trial', 'apgd-ce', 'autoattack' or 'autoattack-fast' (`energy-at eval`)"),
    ("eps", pa.float32(), "L-inf radius of the attack (0 for clean)"),
    ("n", pa.int32(), "samples evaluated"),
    ("accuracy", pa.float32(), "share of samples still classified right (clean accuracy for 'clean')"),
    ("checkpoint", pa.string(), "path of the checkpoint evaluated"),
    ("which", pa.string(), "'best' or 'last' checkpoint (or 'file' when a .pt was given)"),
    ("checkpoint_epoch", pa.int32(), "the checkpoint's `epoch` field: epochs done"),
    ("split", pa.string(), "'test' or 'val'"),
    ("steps", pa.int32(), "attack iterations (null for clean and AutoAttack)"),
    ("restarts", pa.int32(), "random restarts of PGD (null otherwise)"),
    ("alpha", pa.float32(), "PGD step size (null otherwise)"),
    ("seconds", pa.float32(), "wall time of this attack over the n samples"),
    ("wall_time", pa.float64(), "host UNIX time when the row was written"),
]

ATTACK_ENERGIES: list[Column] = [
    ("schema_version", pa.int16(), "version of this schema the row was written with"),
    ("trial", pa.string(), "trial id"),
    ("attack", pa.string(), "attack name as in `evals`"),
    ("targeted", pa.bool_(), "the attack pushed towards `target` instead of away from `label`"),
    ("eps", pa.float32(), "L-inf radius of the attack"),
    ("split", pa.string(), "'test' or 'val'"),
    ("checkpoint", pa.string(), "path of the checkpoint evaluated"),
    ("sample_id", pa.int64(), "index of the sample in the original train or test set"),
    ("label", pa.int16(), "true class y"),
    ("target", pa.int16(), "target class of a targeted attack (null if untargeted)"),
    ("e_nat", pa.float32(), "E(x) before the attack"),
    ("e_adv", pa.float32(), "E(x*) after the attack"),
    ("e_nat_y", pa.float32(), "E(x,y) before the attack"),
    ("e_adv_y", pa.float32(), "E(x*,y) after the attack"),
    ("e_adv_t", pa.float32(), "E(x*,target) after a targeted attack (null if untargeted)"),
    ("correct_nat", pa.bool_(), "prediction on x is right"),
    ("correct_adv", pa.bool_(), "prediction on x* is right"),
    ("pred_adv", pa.int16(), "predicted class of x*"),
]

TABLES: dict[str, list[Column]] = {
    "batches": BATCHES,
    "epochs": EPOCHS,
    "probes": PROBES,
    "events": EVENTS,
    "evals": EVALS,
    "attack_energies": ATTACK_ENERGIES,
}


def arrow_schema(table: str) -> pa.Schema:
    """The pyarrow schema of `table` (one of TABLES)."""
    return pa.schema([pa.field(name, dtype) for name, dtype, _ in TABLES[table]])


def markdown(table: str) -> str:
    """The table's schema as a Markdown table (for the README)."""
    rows = [f"| `{n}` | {t} | {m} |" for n, t, m in TABLES[table]]
    return "\n".join(["| column | type | meaning |", "|---|---|---|", *rows])
