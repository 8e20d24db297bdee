"""Choose the default stop rule's thresholds on the dev split only (test is never read here).

    python benchmarks/detection/choose.py [--corpus DIR]

Scores `co_pgd_probe` over a grid of (ratio, min_drop, z) on the dev seeds with the
scoreboard's labels and scoring, and picks by a rule fixed before looking: zero false stops
on healthy trials, then the most collapses found, then the shortest median delay counted
from 0 (the stopper decides after each epoch: firing before the labelled onset is not
better than firing in it); of the ties, the strictest setting (lowest ratio, then largest min_drop, then largest z), since the
rule has to hold on runs it never saw. Prints the grid, the choice, and whether the
detector's defaults (analysis/detectors.py) are that choice.
"""
from __future__ import annotations

import inspect
import itertools
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from scoreboard import CORPUS, _first, labels, load, markdown, score  # noqa: E402

from analysis.detectors import co_pgd_probe  # noqa: E402
from workloads.config import OneLineParser  # noqa: E402

GRID = {"ratio": (0.4, 0.5, 0.6, 0.7), "min_drop": (0.05, 0.1, 0.15), "z": (2.0, 3.0, 4.0)}


def grid(corpus: Path = CORPUS) -> pl.DataFrame:
    """One row per setting: the dev-split scoreboard columns of co_pgd_probe with it."""
    c = load(corpus)
    # the single-step trials: the choice was made before the RO segment existed, and co_pgd_probe is a CO rule
    lab = labels(c).filter((pl.col("split") == "dev") & (pl.col("segment") == "co"))
    keep = lab["trial"].to_list()
    epochs = c["epochs"].filter(pl.col("trial").is_in(keep))
    rows = []
    for ratio, min_drop, z in itertools.product(*GRID.values()):
        stops = _first(co_pgd_probe(epochs, ratio=ratio, min_drop=min_drop, z=z))
        rows.append({"ratio": ratio, "min_drop": min_drop, "z": z} | score(lab, stops))
    return pl.DataFrame(rows)


def choose(board: pl.DataFrame) -> dict:
    """The setting the rule in the module docstring picks."""
    ranked = board.with_columns(
        fs=pl.col("false_stops").str.split("/").list.first().cast(pl.Int64),
        found=pl.col("collapses").str.split("/").list.first().cast(pl.Int64),
        delay=pl.col("median_delay_epochs").clip(lower_bound=0).fill_null(float("inf")),
    ).sort(["fs", "found", "delay", "ratio", "min_drop", "z"],
           descending=[False, True, False, False, True, True])
    return ranked.row(0, named=True)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(CORPUS))
    a = ap.parse_args(argv)
    board = grid(Path(a.corpus))
    print(markdown(board.drop("best_config_kept")))
    best = choose(board)
    chosen = {k: best[k] for k in GRID}
    defaults = {k: p.default for k, p in inspect.signature(co_pgd_probe).parameters.items() if k in GRID}
    print(f"\nchosen on dev: {chosen}; co_pgd_probe defaults: {defaults} "
          f"({'the same' if chosen == defaults else 'DIFFERENT'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
