"""A self-contained HTML report of a sweep: per-trial plots with events, and the ranking."""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis import detectors
from analysis.rank import display, rank, trial_metrics
from analysis.read import SweepLogs

KIND_COLORS = {"co_energy": "tab:red", "co_pgd_probe": "tab:purple", "ro": "tab:orange", "nan": "black"}


@dataclass
class Report:
    path: Path
    pngs: list[Path]
    ranking: pl.DataFrame
    events: pl.DataFrame


def downsample(batches: pl.LazyFrame, max_points: int = 2000) -> pl.DataFrame:
    """Batch series averaged over equal step buckets so each trial has <= max_points rows."""
    cols = ["de", "de_y", "e_nat", "e_adv"]
    span = pl.col("step").max() - pl.col("step").min() + 1
    width = (span / max_points).ceil().clip(lower_bound=1).cast(pl.Int64).over("trial")
    return (
        batches.select("trial", "step", *cols)
        .with_columns(bucket=pl.col("step") // width)
        .group_by("trial", "bucket")
        .agg(pl.col("step").max(), *(pl.col(c).filter(pl.col(c).is_finite()).mean() for c in cols))
        .sort("trial", "step")
        .collect()
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120] or "trial"


def plot_trial(trial: str, series: pl.DataFrame, epochs: pl.DataFrame, events: pl.DataFrame) -> Figure:
    """Three panels: dE(x) / dE(x,y) and E(x) natural / adversarial per step, accuracies per epoch."""
    fig = Figure(figsize=(9, 8.5), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    ax_de, ax_e, ax_acc = fig.subplots(3, 1)
    if series.height:
        for ax, col, label in ((ax_de, "de", "dE(x)"), (ax_de, "de_y", "dE(x,y)"), (ax_e, "e_nat", "E(x) natural"),
                               (ax_e, "e_adv", "E(x*) adversarial")):
            points = series.select("step", col).drop_nulls().filter(pl.col(col).is_not_nan())  # f(x) may be sparse
            ax.plot(points["step"].to_numpy(), points[col].to_numpy(), lw=0.8, label=label)
    for split, style in (("probe", "-"), ("val", "--")):
        rows = epochs.filter(pl.col("split") == split).sort("epoch")
        for col, color in (("acc_nat", "tab:green"), ("acc_pgd", "tab:blue")):
            if rows.height:
                ax_acc.plot(rows["epoch"].to_numpy(), rows[col].to_numpy(), style, color=color,
                            marker=".", label=f"{split} {col.removeprefix('acc_')}")
    # epoch-level events sit at the epoch's last step in the step panels
    end_step = dict(epochs.group_by("epoch").agg(pl.col("step").max()).iter_rows())
    for kind, epoch, step in events.select("kind", "epoch", "step").iter_rows():
        color = KIND_COLORS.get(kind, "gray")
        at = step if step is not None else end_step.get(epoch)
        if at is not None:
            for ax in (ax_de, ax_e):
                ax.axvline(at, color=color, ls=":", lw=1.5, label=kind)
        ax_acc.axvline(epoch, color=color, ls=":", lw=1.5, label=kind)
    ax_de.set(title=f"trial {trial}: delta energy (batch mean)", xlabel="step", ylabel="dE")
    ax_e.set(title="marginal energy", xlabel="step", ylabel="E")
    ax_acc.set(title="accuracy (probe: train subset, val: held out)", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_de, ax_e, ax_acc):
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    return fig


def _html_table(frame: pl.DataFrame, cls: str) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            v = "" if math.isnan(v) else f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.iter_rows()
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font-family:sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}
th{background:#e8eef7}
.trial img{max-width:100%;border:1px solid #ddd}
.skipped{color:#a00}
"""


def build(sweep: SweepLogs, out: Path, *, max_points: int = 2000, max_trials: int | None = None) -> Report:
    """Detect, rank and plot `sweep`; write `out` (HTML) and `out.parent/report_png/*.png`."""
    batches, epochs, probes = (sweep.scan(t) for t in ("batches", "epochs", "probes"))
    events = detectors.with_actions(detectors.detect(batches, epochs, probes), sweep.scan("events"))
    ranking = rank(trial_metrics(epochs, events), sweep.trials())
    ep = epochs.select("trial", "epoch", "step", "split", "acc_nat", "acc_pgd").collect()
    trials = sorted(set(sweep.trial_ids("batches")) | set(ep["trial"]))
    shown = trials if max_trials is None else trials[:max_trials]
    series = downsample(batches.filter(pl.col("trial").is_in(shown)), max_points)
    png_dir = out.parent / "report_png"
    png_dir.mkdir(parents=True, exist_ok=True)
    sections, pngs = [], []
    for trial in shown:
        fig = plot_trial(
            trial,
            series.filter(pl.col("trial") == trial),
            ep.filter(pl.col("trial") == trial),
            events.filter(pl.col("trial") == trial),
        )
        png = png_dir / f"{_safe(trial)}.png"
        fig.savefig(png, format="png")
        pngs.append(png)
        data = base64.b64encode(png.read_bytes()).decode()
        trial_events = events.filter(pl.col("trial") == trial).select("kind", "epoch", "step", "score", "evidence", "action")
        sections.append(
            f'<section class="trial"><h3>{html.escape(trial)}</h3>'
            f'<img alt="plots of trial {html.escape(trial)}" src="data:image/png;base64,{data}">'
            + (_html_table(trial_events, "events") if trial_events.height else "<p>no events</p>")
            + "</section>"
        )
    skipped = "".join(f"<li>{html.escape(str(p))}: {html.escape(why)}</li>" for p, why in sweep.skipped)
    more = "" if len(shown) == len(trials) else f"<p>showing {len(shown)} of {len(trials)} trials</p>"
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>energy-at report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>energy-at sweep report</h1><p>{html.escape(', '.join(map(str, sweep.dirs)))} &middot; "
        f"{len(trials)} trials &middot; {events.height} events &middot; "
        f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>"
        + (f'<h2>Skipped files</h2><ul class="skipped">{skipped}</ul>' if skipped else "")
        + "<h2>Ranking</h2>" + _html_table(display(ranking), "ranking")
        + "<h2>Trials</h2>" + more + "".join(sections)
        + "</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return Report(out, pngs, ranking, events)
