"""A self-contained HTML report of a sweep that stays readable at hundreds of trials.

The page, top to bottom:

- **Overview**: three interactive plotly figures with every trial on shared axes, plotly.js
  inlined once (no network needed): val PGD accuracy per epoch, the training-batch delta energy
  dE(x,y) per step (bucket means, `downsample`), and robust vs clean accuracy per trial (test
  results of result.json, else the best val epoch). Colour = method, dash / marker symbol = eps,
  one legend group per (method, eps): a click on its legend entry hides the group. Event markers:
  a filled cross where the event stopped the trial (action 'stopped'), an open circle where it
  was only logged. Hovering a line or point shows trial id, method, eps, seed and status.
- **Ranking** (`rank` / `display`).
- **Trials**: one row per trial with the config keys that vary across the sweep, status, stop
  reason, test results and the `evals` results (AutoAttack etc.) when the sweep has them.
- **Detail** only for the top trials of the ranking and the stopped ones, at most `max_trials` of
  them (the page says how many were left out): per trial one plotly figure (SVG) of dE, E and
  accuracy with its events as dotted lines, and its events table.
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import plotly.io as pio
import polars as pl

from analysis import detectors
from analysis.rank import config_keys, display, rank, trial_metrics, unread_as_null
from analysis.read import SweepLogs

KIND_COLORS = {"co_energy": "#d62728", "co_pgd_probe": "#9467bd", "ro": "#ff7f0e", "nan": "#000000"}
# colour per method (matplotlib's tab10, so overview and detail agree), line dash / marker per eps
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "pentagon", "hexagon", "star")
OVERVIEW_POINTS = 120_000  # dE points of all trials together in the overview (at least 50 per trial)
TOP = 5  # detail sections for the best trials of the ranking ...
DETAIL_MAX = 20  # ... plus the stopped ones, at most this many in all
FIGURE_HEIGHT = 520
# an overview line figure with more points than this is drawn with WebGL (scattergl), a smaller one as SVG
# (`build(webgl=None)`). WebGL keeps zoom and hover quick on 100k+ points with a GPU; without one (headless
# Chromium: SwiftShader) it draws several times slower than SVG (benchmarks/RESULTS.md, report_scale.py)
GL_POINTS = 50_000
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
RESULT_COLS = ("result.test_acc_nat", "result.test_acc_pgd", "result.best_test_acc_nat",
               "result.best_test_acc_pgd")


@dataclass
class Report:
    path: Path
    ranking: pl.DataFrame
    events: pl.DataFrame
    trials: pl.DataFrame = field(default_factory=pl.DataFrame)  # the trials table, one row per trial
    detail: list[str] = field(default_factory=list)  # trials that have a detail section
    figures: dict[str, dict] = field(default_factory=dict)  # div id -> plotly figure (dict)


def downsample(batches: pl.LazyFrame, max_points: int = 2000,
               cols: tuple[str, ...] = ("de", "de_y", "e_nat", "e_adv")) -> pl.DataFrame:
    """Batch series averaged over equal step buckets so each trial has <= max_points rows."""
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


def detail_figure(trial: str, series: pl.DataFrame, epochs: pl.DataFrame, events: pl.DataFrame) -> dict:
    """A trial's detail as one plotly figure (SVG) of three panels: dE(x) / dE(x,y) and E(x) natural /
    adversarial per step (bucket means), probe / val clean and PGD accuracy per epoch; events as dotted
    vertical lines (epoch-level events at the epoch's last step in the step panels)."""
    rows = {"de": 1, "de_y": 1, "e_nat": 2, "e_adv": 2}
    ref = {1: "", 2: "2", 3: "3"}  # plotly names the first axes x, y; then x2, y2, ...
    names = {"de": "dE(x)", "de_y": "dE(x,y)", "e_nat": "E(x) natural", "e_adv": "E(x*) adversarial"}
    colors = {"de": PALETTE[0], "de_y": PALETTE[1], "e_nat": PALETTE[2], "e_adv": PALETTE[3]}
    traces = []
    for col, row in rows.items():  # four series of at most max_points bucket means each
        points = series.select("step", col).drop_nulls().filter(pl.col(col).is_not_nan())  # f(x) may be sparse
        traces.append({"type": "scatter", "mode": "lines", "name": names[col],
                       "x": _typed(points["step"].to_numpy(), "f8"), "y": _typed(points[col].to_numpy()),
                       "xaxis": f"x{ref[row]}", "yaxis": f"y{ref[row]}",
                       "line": {"color": colors[col], "width": 1}, "legendgroup": f"panel{row}",
                       "hovertemplate": f"{names[col]} %{{y:.3f}}<br>step %{{x}}<extra></extra>"})
    for split, dash in (("probe", "solid"), ("val", "dash")):
        acc = epochs.filter(pl.col("split") == split).sort("epoch")
        for col, color in (("acc_nat", PALETTE[2]), ("acc_pgd", PALETTE[0])):
            if acc.height:
                name = f"{split} {col.removeprefix('acc_')}"
                traces.append({"type": "scatter", "mode": "lines+markers", "name": name, "xaxis": "x3", "yaxis": "y3",
                               "x": _typed(acc["epoch"].to_numpy()), "y": _typed(acc[col].to_numpy()),
                               "line": {"color": color, "dash": dash, "width": 1.5}, "marker": {"size": 5},
                               "legendgroup": "panel3",
                               "hovertemplate": f"{name} %{{y:.3f}}<br>epoch %{{x}}<extra></extra>"})
    end_step = epochs.group_by("epoch").agg(end=pl.col("step").max())
    marks = (events.join(end_step, on="epoch", how="left")
             .with_columns(at=pl.coalesce(pl.col("step"), pl.col("end")).cast(pl.Float64)))
    shapes = []
    for kind, epoch, at in marks.select("kind", "epoch", "at").iter_rows():  # a trial has a few events
        line = {"color": KIND_COLORS.get(kind, "#888"), "dash": "dot", "width": 2}
        shapes += [{"type": "line", "xref": f"x{ref[row]}", "yref": f"y{ref[row]} domain", "x0": x, "x1": x,
                    "y0": 0, "y1": 1, "line": line} for row, x in ((1, at), (2, at), (3, epoch)) if x is not None]
    for kind in marks["kind"].unique(maintain_order=True).to_list():  # legend entries for the event lines
        traces.append({"type": "scatter", "mode": "lines", "x": [None], "y": [None], "name": f"event {kind}",
                       "line": {"color": KIND_COLORS.get(kind, "#888"), "dash": "dot", "width": 2},
                       "hoverinfo": "skip"})
    axis = {"zeroline": False, "gridcolor": "#e5e5e5", "linecolor": "#999"}
    layout = {
        "height": 640, "margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "hovermode": "closest",
        "plot_bgcolor": "#fff", "paper_bgcolor": "#fff", "showlegend": True, "legend": {"font": {"size": 11}},
        "title": {"text": f"{html.escape(trial)}: delta energy, marginal energy, accuracy", "x": 0.01,
                  "font": {"size": 14}},
        "xaxis": {**axis, "anchor": "y", "domain": [0, 1]}, "yaxis": {**axis, "anchor": "x", "domain": [0.71, 1],
                                                                      "title": {"text": "dE"}},
        "xaxis2": {**axis, "anchor": "y2", "matches": "x", "domain": [0, 1]},
        "yaxis2": {**axis, "anchor": "x2", "domain": [0.38, 0.63], "title": {"text": "E"}},
        "xaxis3": {**axis, "anchor": "y3", "domain": [0, 1], "title": {"text": "epoch"},
                   **epoch_ticks(epochs["epoch"].max())},
        "yaxis3": {**axis, "anchor": "x3", "domain": [0, 0.3], "title": {"text": "accuracy"}},
        "shapes": shapes,
    }
    layout["xaxis2"]["title"] = {"text": "step"}
    return {"data": traces, "layout": layout}


def _html_table(frame: pl.DataFrame, cls: str, links: dict[str, str] | None = None) -> str:
    """`frame` as an HTML table; a `trial` cell whose value is in `links` links to that anchor."""
    links = links or {}
    trial_col = frame.columns.index("trial") if "trial" in frame.columns else -1

    def cell(i: int, v: object) -> str:
        if isinstance(v, float):
            v = "" if math.isnan(v) else f"{v:.4g}"
        text = html.escape("" if v is None else str(v))
        if i == trial_col and v in links:
            return f'<td><a href="#{links[v]}">{text}</a></td>'
        return f'<td class="long">{text}</td>' if len(text) > 40 else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in frame.iter_rows()
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font-family:sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}
td{white-space:nowrap}
td.long{white-space:normal;min-width:16em;max-width:40em;overflow-wrap:anywhere}
th{background:#e8eef7}
table.sortable th{cursor:pointer}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}
.figure{border:1px solid #ddd;margin:8px 0 20px}
.note{color:#555;font-size:13px;max-width:70em}
.trial img{max-width:100%;border:1px solid #ddd}
.skipped{color:#a00}
nav a{margin-right:1em}
"""

# click a header to sort (numbers by value: "0.41 ± 0.02" sorts as 0.41; empty cells last)
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var t = row.cells[col].textContent.trim(), n = parseFloat(t);
        return t === '' ? null : (isNaN(n) ? t : n);
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
        return dir === 'asc' ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


# --- data --------------------------------------------------------------------------------------

def _typed(values: np.ndarray, dtype: str = "f4") -> dict:
    """A plotly.js typed-array spec (base64): about a third of the size of a JSON list of the numbers."""
    data = np.ascontiguousarray(values, dtype=f"<{dtype}").tobytes()
    return {"dtype": dtype, "bdata": base64.b64encode(data).decode()}


def _split(frame: pl.DataFrame, key: str, cols: tuple[str, ...]) -> dict[str, tuple[np.ndarray, ...]]:
    """Rows of `frame` (contiguous per `key`) as numpy arrays per key value, without a loop over rows."""
    if frame.is_empty():
        return {}
    runs = frame.select(pl.col(key).rle_id().alias("_run"), key).group_by("_run", maintain_order=True).agg(
        pl.col(key).first(), pl.len())
    arrays = [frame[c].to_numpy() for c in cols]
    bounds = np.cumsum(runs["len"].to_numpy())[:-1]
    pieces = [np.split(a, bounds) for a in arrays]
    return {k: tuple(p[i] for p in pieces) for i, k in enumerate(runs[key].to_list())}


def _esc(column: str) -> pl.Expr:
    """A string column made safe for plotly's hover labels (they read a few HTML tags)."""
    return (pl.col(column).cast(pl.String).fill_null("?").str.replace_all("&", "&amp;", literal=True)
            .str.replace_all("<", "&lt;", literal=True).str.replace_all(">", "&gt;", literal=True))


def trial_info(sweep: SweepLogs, trials: pl.DataFrame, epochs: pl.LazyFrame) -> pl.DataFrame:
    """One row per trial (with config, telemetry or both): method, eps, seed, status, reason, its
    (method, eps) `group` (with the sort indexes of both) and `hover`, its hover-label lines."""
    logged = epochs.group_by("trial").agg(pl.col("method").drop_nulls().first().alias("_method")).collect()
    ids = pl.concat([trials.select("trial"), logged.select("trial"),
                     pl.DataFrame({"trial": sweep.trial_ids("batches")}, schema={"trial": pl.String})]).unique()
    keep = [c for c in ("trial", "status", "reason", "method.name", "attack.eps", "seed") if c in trials.columns]
    info = (ids.join(trials.select(keep), on="trial", how="left").join(logged, on="trial", how="left")
            .with_columns(
                method=(pl.col("method.name") if "method.name" in keep else pl.lit(None, pl.String))
                .cast(pl.String).fill_null(pl.col("_method")).fill_null("?"),
                eps=(pl.col("attack.eps") if "attack.eps" in keep else pl.lit(None)).cast(pl.Float64, strict=False),
                seed=(pl.col("seed") if "seed" in keep else pl.lit(None)).cast(pl.String),
                status=(pl.col("status") if "status" in keep else pl.lit(None)).cast(pl.String).fill_null("unknown"),
                reason=(pl.col("reason") if "reason" in keep else pl.lit(None)).cast(pl.String),
            )
            .select("trial", "method", "eps", "seed", "status", "reason"))
    methods = sorted(info["method"].unique().to_list())
    eps_values = sorted(info["eps"].drop_nulls().unique().to_list())
    eps_index = pl.col("eps").replace_strict(eps_values, list(range(len(eps_values))), default=len(eps_values),
                                             return_dtype=pl.Int64)
    info = info.with_columns(
        eps_text=pl.col("eps").round(4).cast(pl.String).fill_null("?"),
        method_index=pl.col("method").replace_strict(methods, list(range(len(methods))), return_dtype=pl.Int64),
        eps_index=eps_index,
    ).with_columns(group=pl.col("method") + " eps=" + pl.col("eps_text"))
    info = info.with_columns(
        hover=pl.format("<b>{}</b><br>{} eps={} seed={}<br>status: {}", _esc("trial"), _esc("method"),
                        pl.col("eps_text"), _esc("seed"), _esc("status")),
    )
    return info.sort("method_index", "eps_index", "trial")


def _shade(color: str, amount: float) -> str:
    """`color` mixed with white by `amount` (0 = itself)."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def _styles(info: pl.DataFrame) -> dict[str, dict]:
    """Group -> colour (method; lighter for larger eps), dash and symbol (eps): one entry per group."""
    groups = info.select("group", "method_index", "eps_index").unique().sort("method_index", "eps_index")
    n_eps = info["eps"].drop_nulls().n_unique()

    def lighter(e: int) -> float:  # 0 for the smallest eps, 0.45 for the largest
        return 0.45 * min(e, n_eps - 1) / (n_eps - 1) if n_eps > 1 else 0.0

    return {
        g: {"color": _shade(PALETTE[m % len(PALETTE)], lighter(e)), "dash": DASHES[e % len(DASHES)],
            "symbol": SYMBOLS[e % len(SYMBOLS)]}
        for g, m, e in groups.iter_rows()  # one row per (method, eps) group
    }


# --- figures -----------------------------------------------------------------------------------

def epoch_ticks(last_epoch: float | None) -> dict:
    """Ticks on whole epochs for an epoch axis (plotly's automatic ticks fall on halves in short runs),
    about 10 of them."""
    return {"tick0": 0, "dtick": max(1, math.ceil(((last_epoch or 0) + 1) / 10))}


def _layout(title: str, xaxis: str, yaxis: str, **extra: object) -> dict:
    return {
        "title": {"text": title, "x": 0.01, "xanchor": "left"},
        "height": FIGURE_HEIGHT, "hovermode": "closest", "plot_bgcolor": "#fff", "paper_bgcolor": "#fff",
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "legend": {"groupclick": "togglegroup", "itemclick": "toggle", "itemdoubleclick": "toggleothers",
                   "tracegroupgap": 2,
                   "title": {"text": "method, eps (click: hide)"}, "font": {"size": 11}},
        "xaxis": {"title": {"text": xaxis}, "zeroline": False, "gridcolor": "#e5e5e5", "linecolor": "#999"},
        "yaxis": {"title": {"text": yaxis}, "zeroline": False, "gridcolor": "#e5e5e5", "linecolor": "#999"},
        "hoverlabel": {"namelength": -1, "align": "left"},
        **extra,
    }


def _group_header(group: str, style: dict, kind: str) -> dict:
    """The legend entry of a group: no data of its own; clicking it toggles the group's traces."""
    return {"type": kind, "x": [None], "y": [None], "mode": "lines", "name": group, "legendgroup": group,
            "showlegend": True, "hoverinfo": "skip",
            "line": {"color": style["color"], "dash": style["dash"], "width": 2}}


EVENT_KEY = {"stopped": {"symbol": "x", "size": 12, "line": {"width": 1, "color": "#000"}},
             "logged": {"symbol": "circle-open", "size": 9, "line": {"width": 2}}}


def _event_traces(events: pl.DataFrame, x: str, y: str, styles: dict[str, dict], kind: str) -> list[dict]:
    """Event markers at (x, y) of each event's trial, one trace per (group, action) in the group's legend group,
    then a legend key (no data) for the two marker shapes."""
    traces = []
    if events.height:
        text = pl.format("<b>{}</b> ({}) at epoch {}<br>{}<br>{}", pl.col("kind"), pl.col("action"), pl.col("epoch"),
                         pl.col("hover"), _esc("evidence").str.slice(0, 160))
        events = events.with_columns(text=text).sort("group", "action")
        for (group, action), part in events.group_by("group", "action", maintain_order=True):
            marker = EVENT_KEY.get(action, EVENT_KEY["logged"])
            color = styles[group]["color"]
            traces.append({
                "type": kind, "mode": "markers", "x": _typed(part[x].to_numpy()), "y": _typed(part[y].to_numpy()),
                "text": part["text"].to_list(), "hovertemplate": "%{text}<extra></extra>",
                "name": f"{group}: {action} events", "legendgroup": group, "showlegend": False,
                "marker": {**marker, "color": color, "line": {"color": color, **marker["line"]}},
            })
    for action, marker in EVENT_KEY.items():
        traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "hoverinfo": "skip",
                       "name": f"event, {action}", "legendgroup": "_events", "showlegend": True,
                       "legendgrouptitle": {"text": "markers"},
                       "marker": {**marker, "color": "#444", "line": {"color": "#444", **marker["line"]}}})
    return traces


def _line_figure(data: pl.DataFrame, x: str, y: str, info: pl.DataFrame, styles: dict[str, dict],
                 events: pl.DataFrame, *, title: str, xlabel: str, ylabel: str, value: str,
                 webgl: bool | None = None) -> dict:
    """One line per trial (x, y from `data`, sorted by trial then x), grouped by (method, eps);
    scattergl if `webgl` (None: if there are more than GL_POINTS points)."""
    per_trial = _split(data, "trial", (x, y))
    kind = "scattergl" if (data.height > GL_POINTS if webgl is None else webgl) else "scatter"
    traces = []
    for group, trials in info.group_by("group", maintain_order=True):
        style = styles[group[0]]
        traces.append(_group_header(group[0], style, kind))
        for trial, hover in trials.select("trial", "hover").iter_rows():  # one trace per trial, not per row
            if trial not in per_trial:
                continue
            xs, ys = per_trial[trial]
            traces.append({
                "type": kind, "mode": "lines", "name": trial, "legendgroup": group[0], "showlegend": False,
                "x": _typed(xs, "f8" if x == "step" else "f4"), "y": _typed(ys),
                "line": {"color": style["color"], "dash": style["dash"], "width": 1.2}, "opacity": 0.75,
                "hovertemplate": f"{hover}<br>{xlabel} %{{x}}<br>{value} %{{y:.3f}}<extra></extra>",
            })
    traces += _event_traces(events, x, y, styles, "scatter")
    layout = _layout(title, xlabel, ylabel)
    if x == "epoch":
        layout["xaxis"] |= epoch_ticks(data["epoch"].max())
    return {"data": traces, "layout": layout}


def _results_figure(results: pl.DataFrame, styles: dict[str, dict]) -> dict:
    """Robust vs clean accuracy per trial: test results (filled) or the best val epoch (open)."""
    traces = []
    for (group, source), part in results.group_by("group", "source", maintain_order=True):
        style = styles[group]
        if not any(t["legendgroup"] == group for t in traces):  # the group's legend entry
            traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": group,
                           "legendgroup": group, "showlegend": True, "hoverinfo": "skip",
                           "marker": {"symbol": style["symbol"], "size": 10, "color": style["color"]}})
        stopped = (part["status"] == "stopped").to_numpy()
        symbol = style["symbol"] if source == "test" else f"{style['symbol']}-open"
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{group} ({source})", "legendgroup": group,
            "showlegend": False, "x": _typed(part["clean"].to_numpy()), "y": _typed(part["robust"].to_numpy()),
            "text": part["text"].to_list(), "hovertemplate": "%{text}<extra></extra>",
            "marker": {"symbol": symbol, "size": 10, "color": style["color"], "opacity": 0.85,
                       "line": {"width": np.where(stopped, 2.0, 1.0 if source != "test" else 0.5).tolist(),
                                "color": np.where(stopped, "#000", style["color"]).tolist()}},
        })
    key = (("test set (result.json)", "circle", "#444"), ("best val epoch", "circle-open", "#444"),
           ("stopped trial", "circle", "#bbb"))
    for name, symbol, color in key:
        traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": name,
                       "legendgroup": "_key", "legendgrouptitle": {"text": "markers"}, "hoverinfo": "skip",
                       "marker": {"symbol": symbol, "size": 10, "color": color,
                                  "line": {"width": 2 if name == "stopped trial" else 1, "color": "#000"}}})
    layout = _layout("Robust vs clean accuracy per trial (test set of result.json where it has one, else the"
                     " best val epoch)", "clean accuracy", "PGD accuracy")
    return {"data": traces, "layout": layout}


def _figure_html(fig: dict, div_id: str, first: bool, height: int = FIGURE_HEIGHT) -> str:
    post = ("var gd = document.getElementById('{plot_id}'); gd.setAttribute('data-drawn', '1');"
            "document.dispatchEvent(new CustomEvent('energy-at:drawn', {detail: '{plot_id}'}));")
    return pio.to_html(fig, include_plotlyjs=first, full_html=False, validate=False, div_id=div_id,
                       config=PLOTLY_CONFIG, post_script=post, default_height=f"{height}px")


# --- tables ------------------------------------------------------------------------------------

def evals_table(evals: pl.LazyFrame) -> pl.DataFrame | None:
    """One row per trial with the latest accuracy of each (attack, checkpoint, split[, eps]) of the
    `evals` table as columns `eval <attack> (<which> <split>)`; None if the sweep has no evals."""
    latest = (
        evals.select("trial", "attack", "eps", "which", "split", "accuracy", "wall_time")
        .sort("wall_time", nulls_last=False)
        .group_by("trial", "attack", "which", "split", "eps")
        .agg(pl.col("accuracy").last())
        .collect()
    )
    if latest.is_empty():
        return None
    several_eps = latest.group_by("trial", "attack", "which", "split").len()["len"].max() > 1
    eps = pl.format(" eps={}", pl.col("eps").round(4)) if several_eps else pl.lit("")
    named = latest.with_columns(
        column=pl.format("eval {}{} ({} {})", pl.col("attack"), eps, pl.col("which").fill_null("?"),
                         pl.col("split").fill_null("?")),
        order=pl.col("attack").replace_strict({"clean": 0}, default=1, return_dtype=pl.Int8),
    ).sort("order", "attack", "column")
    return named.pivot(on="column", index="trial", values="accuracy", aggregate_function="first")


def _config_rank(ranking: pl.DataFrame, trials: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """trial -> position (1-based) of its configuration in `ranking` (`ids`: every trial)."""
    if trials.is_empty():  # as `rank` does: each trial its own configuration
        trials = pl.DataFrame({"trial": ids, "has_config": False})
    configured = unread_as_null(trials)
    keys = [k for k in config_keys(configured) if k in ranking.columns]
    own = (pl.when(pl.col("has_config").fill_null(False)).then(pl.lit(None, pl.String))
           .otherwise(pl.lit("trial=") + pl.col("trial")))
    table = ranking.with_row_index("rank", offset=1)
    if "config" not in table.columns:
        table = table.with_columns(config=pl.lit(None, pl.String))
    return (configured.with_columns(config=own).select("trial", "config", *keys)
            .join(table.select("rank", "config", *keys), on=["config", *keys], how="left", nulls_equal=True)
            .select("trial", "rank"))


def _trials_table(info: pl.DataFrame, trials: pl.DataFrame, metrics: pl.DataFrame, order: pl.DataFrame,
                  evals: pl.DataFrame | None) -> pl.DataFrame:
    """The trials table: rank, trial, method, eps, varying config keys, status, reason, results, evals."""
    configured = unread_as_null(trials) if not trials.is_empty() else trials
    skip = {"method.name", "attack.eps"}
    varying = [k for k in config_keys(configured) + (["seed"] if "seed" in configured.columns else [])
               if k not in skip and configured[k].n_unique() > 1]
    results = [c for c in RESULT_COLS if c in trials.columns]
    table = (
        order.join(info.select("trial", "method", "eps", "status", "reason"), on="trial", how="left")
        .join(configured.select("trial", *varying), on="trial", how="left")
        .join(trials.select("trial", *(["epochs_done"] if "epochs_done" in trials.columns else []), *results),
              on="trial", how="left")
        .join(metrics.select("trial", "robust_best", "robust_final", "clean_final"), on="trial", how="left")
        .rename({c: c.removeprefix("result.") for c in results} | {"robust_best": "val_pgd_best",
                                                                   "robust_final": "val_pgd_final",
                                                                   "clean_final": "val_nat_final"})
    )
    if evals is not None:
        table = table.join(evals, on="trial", how="left")
    first = ["rank", "trial", "method", "eps", *varying]
    return table.select(*first, pl.exclude(first))


# --- the page ----------------------------------------------------------------------------------

def build(sweep: SweepLogs, out: Path, *, max_points: int = 2000, max_trials: int | None = DETAIL_MAX,
          top: int = TOP, webgl: bool | None = None) -> Report:
    """Detect, rank and plot `sweep`; write `out`, one self-contained HTML file (see the module doc).

    max_points: dE points per trial (in the overview at most OVERVIEW_POINTS // trials, at least 50);
    max_trials: detail sections at most (None: the `top` best and every stopped trial); webgl: draw the
    overview's line figures with WebGL (None: those with more than GL_POINTS points)."""
    batches, epochs, probes = (sweep.scan(t) for t in ("batches", "epochs", "probes"))
    events = detectors.with_actions(detectors.detect(batches, epochs, probes), sweep.scan("events"))
    trials = sweep.trials(results=True)
    metrics = trial_metrics(epochs, events)
    ranking = rank(metrics, trials.drop([c for c in trials.columns if c.startswith("result.")]))
    info = trial_info(sweep, trials, epochs)
    styles = _styles(info)
    n_trials = info.height

    # trial order: by the ranking of its configuration, then by its own final robust accuracy
    order = (
        info.select("trial").join(_config_rank(ranking, trials, info["trial"]), on="trial", how="left")
        .join(metrics.select("trial", "robust_final"), on="trial", how="left")
        .sort("rank", "robust_final", "trial", descending=[False, True, False], nulls_last=True)
        .with_columns(within=pl.int_range(pl.len()).over("rank"))
        .select("trial", "rank", "within")
    )

    # overview data, each a lazy scan -> filter -> group
    val = (
        epochs.filter(pl.col("split") == "val").select("trial", "epoch", "step", "acc_pgd", "acc_nat")
        .unique(subset=["trial", "epoch"], keep="last", maintain_order=True).sort("trial", "epoch").collect()
    )
    per_trial = max(50, min(max_points, OVERVIEW_POINTS // max(n_trials, 1)))
    de = downsample(batches, per_trial, cols=("de_y",)).drop_nulls("de_y").select("trial", "step", "de_y")
    epoch_end = epochs.group_by("trial", "epoch").agg(end=pl.col("step").max()).collect()
    ev = (events.join(info.select("trial", "group", "hover"), on="trial", how="inner")
          .join(epoch_end, on=["trial", "epoch"], how="left")
          .with_columns(at=pl.coalesce(pl.col("step"), pl.col("end")).cast(pl.Float64)))
    ev_acc = (ev.sort("epoch").join_asof(val.select("trial", "epoch", "acc_pgd").sort("epoch"), on="epoch",
                                         by="trial", strategy="backward", check_sortedness=False).drop_nulls("acc_pgd"))
    ev_de = (ev.drop_nulls("at").sort("at")
             .join_asof(de.with_columns(at=pl.col("step").cast(pl.Float64)).select("trial", "at", "de_y").sort("at"),
                        on="at", by="trial", strategy="nearest", check_sortedness=False).drop_nulls("de_y"))
    best_clean = (val.join(metrics.select("trial", epoch="robust_best_epoch"), on=["trial", "epoch"])
                  .select("trial", best_clean="acc_nat"))
    tested = trials.select("trial", *(pl.col(c).cast(pl.Float64) if c in trials.columns
                                      else pl.lit(None, pl.Float64).alias(c)
                                      for c in ("result.test_acc_nat", "result.test_acc_pgd")))
    from_test = pl.col("result.test_acc_pgd").is_not_null() & pl.col("result.test_acc_nat").is_not_null()
    results = (
        info.join(metrics.select("trial", "robust_best"), on="trial", how="left")
        .join(best_clean, on="trial", how="left").join(tested, on="trial", how="left")
        .with_columns(
            source=pl.when(from_test).then(pl.lit("test")).otherwise(pl.lit("best val")),
            robust=pl.when(from_test).then("result.test_acc_pgd").otherwise("robust_best"),
            clean=pl.when(from_test).then("result.test_acc_nat").otherwise("best_clean"),
        )
        .drop_nulls(["robust", "clean"])
        .with_columns(text=pl.format("{}<br>{}: PGD acc {}, clean acc {}", pl.col("hover"), pl.col("source"),
                                     pl.col("robust").round(3), pl.col("clean").round(3)))
        .sort("method_index", "eps_index", "source", descending=[False, False, True])
    )

    figures = {
        "overview-acc": _line_figure(
            val.select("trial", "epoch", "acc_pgd"), "epoch", "acc_pgd", info, styles,
            ev_acc.select("trial", "group", "hover", "kind", "action", "epoch", "evidence", "acc_pgd"),
            title=f"Val PGD accuracy per epoch, {n_trials} trials", xlabel="epoch", ylabel="val PGD accuracy",
            value="val PGD acc", webgl=webgl),
        "overview-de": _line_figure(
            de.with_columns(pl.col("step").cast(pl.Float64)), "step", "de_y", info, styles,
            ev_de.select("trial", "group", "hover", "kind", "action", "epoch", "evidence", step="at", de_y="de_y"),
            title=f"Training-batch delta energy dE(x,y) per step (bucket means, <= {per_trial} points per trial)",
            xlabel="step", ylabel="dE(x,y)", value="dE(x,y)", webgl=webgl),
        "overview-results": _results_figure(results, styles),
    }
    overview = "".join(f'<div class="figure">{_figure_html(fig, div, i == 0)}</div>'
                       for i, (div, fig) in enumerate(figures.items()))

    # detail: the `top` best trials (best seed of each of the top configurations first), then the stopped ones
    stopped = info.filter(pl.col("status") == "stopped").select("trial")
    candidates = pl.concat([
        order.sort("within", "rank", nulls_last=True).head(top).select("trial").with_columns(why=pl.lit("top")),
        order.join(stopped, on="trial").select("trial").with_columns(why=pl.lit("stopped")),
    ]).unique(subset="trial", keep="first", maintain_order=True)
    shown = candidates if max_trials is None else candidates.head(max_trials)
    detail = shown["trial"].to_list()
    anchors = {t: f"trial-{_safe(t)}" for t in detail}
    series = downsample(batches.filter(pl.col("trial").is_in(detail)), max_points)
    ep = epochs.filter(pl.col("trial").is_in(detail)).select("trial", "epoch", "step", "split", "acc_nat",
                                                              "acc_pgd").collect()
    sections = []
    for trial, why in shown.iter_rows():  # one section per detailed trial
        fig = detail_figure(trial, series.filter(pl.col("trial") == trial), ep.filter(pl.col("trial") == trial),
                            events.filter(pl.col("trial") == trial))
        figures[f"{anchors[trial]}-plot"] = fig
        trial_events = events.filter(pl.col("trial") == trial).select("kind", "epoch", "step", "score", "evidence",
                                                                       "action")
        row = info.filter(pl.col("trial") == trial).row(0, named=True)
        sections.append(
            f'<section class="trial"><h3 id="{anchors[trial]}">{html.escape(trial)}</h3>'
            f'<p>{html.escape(row["method"])} eps={html.escape(row["eps_text"])} seed={html.escape(str(row["seed"]))}'
            f' &middot; {html.escape(row["status"])} &middot; {"top of the ranking" if why == "top" else "stopped"}'
            + (f": {html.escape(row['reason'])}" if row["reason"] else "") + "</p>"
            + f'<div class="figure">{_figure_html(fig, f"{anchors[trial]}-plot", False, 640)}</div>'
            + (_html_table(trial_events, "events") if trial_events.height else "<p>no events</p>")
            + "</section>"
        )
    n_top = shown.filter(pl.col("why") == "top").height
    n_stopped, omitted = shown.height - n_top, candidates.height - shown.height
    detail_note = (
        f"<p class='note'>{shown.height} of {n_trials} trials: the {n_top} best of the ranking (the best seed of each"
        f" top configuration first) and {n_stopped} stopped"
        + (f"; {omitted} more stopped trials omitted (at most {max_trials} sections)" if omitted else "")
        + ". Every trial is in the overview and the trials table.</p>"
    )

    table = _trials_table(info, trials, metrics, order.drop("within"), evals_table(sweep.scan("evals")))
    statuses = ", ".join(f"{n} {html.escape(s)}" for s, n in
                         info.group_by("status").len().sort("len", "status", descending=[True, False]).iter_rows())
    n_stops = events.filter(pl.col("action") == "stopped").height
    skipped = "".join(f"<li>{html.escape(str(p))}: {html.escape(why)}</li>" for p, why in sweep.skipped)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>energy-at report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>energy-at sweep report</h1><p>{html.escape(', '.join(map(str, sweep.dirs)))} &middot; "
        f"{n_trials} trials ({statuses}) &middot; {events.height} events ({n_stops} stopped a trial) &middot; "
        f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>"
        "<nav><a href='#overview'>Overview</a><a href='#ranking'>Ranking</a><a href='#trials'>Trials</a>"
        "<a href='#detail'>Detail</a></nav>"
        + (f'<h2>Skipped files</h2><ul class="skipped">{skipped}</ul>' if skipped else "")
        + "<h2 id='overview'>Overview</h2><p class='note'>Every trial on shared axes. Click a legend entry to hide"
          " its (method, eps) group, double-click to show only that group; drag to zoom, double-click the plot to"
          " reset. Colour: method; dash and marker shape: eps. Markers: &#x2715; the event that stopped the trial,"
          " &#x25CB; an event only logged. Hover a line or point for the trial.</p>"
        + overview
        + "<h2 id='ranking'>Ranking</h2>" + _html_table(display(ranking), "ranking sortable")
        + f"<h2 id='trials'>Trials</h2><p class='note'>{n_trials} trials in ranking order (rank: of the trial's"
          " configuration); config keys that vary across the sweep; test_*: result.json; eval *: the evals table"
          " (latest per attack). Click a header to sort.</p>"
        + _html_table(table, "trials sortable", anchors)
        + "<h2 id='detail'>Detail</h2>" + detail_note + "".join(sections)
        + f"<script>{SORT_JS}</script></body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return Report(out, ranking, events, table, detail, figures)
