"""Per-sample energies before and after attacks: summary and the distribution figure.

The figure reproduces the papers' observation (docs/methods.md#attack-energies):
on a standard model untargeted attacks (PGD, APGD) push the marginal energy E(x)
down and the joint energy E(x,y) up, while a targeted attack raises E(x).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def summarise(cols: dict[str, list]) -> list[dict]:
    """Mean energies before/after, per attack (in first-seen order)."""
    attacks = list(dict.fromkeys(cols["attack"]))
    out = []
    a = np.asarray(cols["attack"])
    for name in attacks:
        m = a == name
        get = lambda k: np.asarray(cols[k], dtype=np.float64)[m]  # noqa: E731
        out.append({"attack": name, "targeted": bool(np.asarray(cols["targeted"])[m][0]), "n": int(m.sum()),
                    "e_nat": get("e_nat").mean(), "e_adv": get("e_adv").mean(),
                    "e_nat_y": get("e_nat_y").mean(), "e_adv_y": get("e_adv_y").mean()})
    return out


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'attack':<20} {'kind':<10} {'n':>5}  {'E(x) before -> after':>24}  {'E(x,y) before -> after':>24}"]
    for r in rows:
        kind = "targeted" if r["targeted"] else "untargeted"
        lines.append(f"{r['attack']:<20} {kind:<10} {r['n']:>5}  {r['e_nat']:>10.3f} -> {r['e_adv']:<10.3f}  "
                     f"{r['e_nat_y']:>10.3f} -> {r['e_adv_y']:<10.3f}")
    return "\n".join(lines)


def plot(cols: dict[str, list], png: str | Path, title: str = "") -> Path:
    """Histograms of E(x) (top row) and E(x,y) (bottom row) before/after each attack (one column each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarise(cols)
    a = np.asarray(cols["attack"])
    fig, axes = plt.subplots(2, len(rows), figsize=(4.2 * len(rows), 6.4), squeeze=False)
    for j, r in enumerate(rows):
        m = a == r["attack"]
        for i, (nat_key, adv_key, label) in enumerate((("e_nat", "e_adv", "E(x)"), ("e_nat_y", "e_adv_y", "E(x,y)"))):
            ax = axes[i, j]
            nat = np.asarray(cols[nat_key], dtype=np.float64)[m]
            adv = np.asarray(cols[adv_key], dtype=np.float64)[m]
            lo, hi = np.percentile(np.concatenate([nat, adv]), [0.5, 99.5])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
            ax.hist(nat, bins=bins, alpha=0.55, color="tab:blue", label=f"natural (mean {nat.mean():.2f})")
            ax.hist(adv, bins=bins, alpha=0.55, color="tab:red", label=f"adversarial (mean {adv.mean():.2f})")
            ax.axvline(nat.mean(), color="tab:blue", lw=1.2)
            ax.axvline(adv.mean(), color="tab:red", lw=1.2)
            ax.set_xlabel(label)
            ax.legend(fontsize=8)
            if i == 0:
                kind = "targeted" if r["targeted"] else "untargeted"
                ax.set_title(f"{r['attack']} ({kind})")
        axes[0, j].set_ylabel("samples") if j == 0 else None
    fig.suptitle(title or "energies before and after attacks")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
