"""Headless Chromium for the report tests and benchmarks/report_scale.py: render a page, read back what
plotly drew, the JavaScript errors and the resources it loaded, and take screenshots.

`probe(html)` adds two scripts to a page: one at the start of <head> (before plotly.js runs) records
every uncaught error, unhandled rejection and console.error in `<html data-js-errors>`; one at the
end waits until every plotly figure has drawn (the report's figures set `data-drawn` when
Plotly.newPlot resolves), optionally clicks a legend entry, then writes a JSON summary into
`<pre id="probe">`. `render(path)` runs `chromium --dump-dom` on it and returns that summary.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars",
         "--enable-unsafe-swiftshader"]  # WebGL on the CPU (no GPU here): our own pages only

HOOK = """<script>
(function () {
  var errors = [];
  function record(msg) {
    errors.push(String(msg));
    document.documentElement.setAttribute('data-js-errors', JSON.stringify(errors));
  }
  window.addEventListener('error', function (e) {
    record('error: ' + e.message + (e.filename ? ' at ' + e.filename.slice(-40) + ':' + e.lineno : ''));
  });
  window.addEventListener('unhandledrejection', function (e) {
    record('unhandledrejection: ' + ((e.reason && e.reason.stack) || e.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    record('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return consoleError.apply(console, arguments);
  };
  document.documentElement.setAttribute('data-js-errors', '[]');
})();
</script>"""

PROBE = """<script>
window.addEventListener('load', function () {
  var CLICK = %(click)s, WAIT = %(wait)d, tries = 0;
  function painted(canvas) {  // non-transparent pixels of a (WebGL) canvas, sampled
    if (!canvas.width || !canvas.height) { return 0; }
    var c = document.createElement('canvas'); c.width = canvas.width; c.height = canvas.height;
    var ctx = c.getContext('2d'); ctx.drawImage(canvas, 0, 0);
    var data = ctx.getImageData(0, 0, c.width, c.height).data, n = 0;
    for (var i = 3; i < data.length; i += 16) { if (data[i] > 0) { n++; } }
    return n;
  }
  function summary(gd) {
    var full = gd._fullData || [];
    return {
      id: gd.id, drawn: gd.getAttribute('data-drawn') === '1',
      traces: (gd.data || []).length,
      visible: full.filter(function (t) { return t.visible === true; }).length,
      legendgroups: Array.from(new Set(full.map(function (t) { return t.legendgroup; }).filter(Boolean))).length,
      legend: Array.prototype.map.call(gd.querySelectorAll('.legend .traces .legendtext'),
                                       function (t) { return t.textContent; }),
      svg: gd.querySelectorAll('svg.main-svg').length,
      lines: gd.querySelectorAll('.scatterlayer .js-line').length,
      points: gd.querySelectorAll('.scatterlayer .point').length,
      shapes: gd.querySelectorAll('.shapelayer path').length,
      canvases: gd.querySelectorAll('canvas').length,
      painted: Array.prototype.reduce.call(gd.querySelectorAll('canvas'),
                                           function (n, c) { return n + painted(c); }, 0),
      width: gd.getBoundingClientRect().width, height: gd.getBoundingClientRect().height
    };
  }
  function finish(clicked) {
    var divs = Array.prototype.slice.call(document.querySelectorAll('.plotly-graph-div'));
    var out = {
      figures: divs.map(summary), clicked: clicked, drawnAt: performance.now(),
      external: document.querySelectorAll('script[src], link[href], iframe, object, embed, ' +
                                          'img:not([src^="data:"])').length,
      resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
      tables: Array.prototype.map.call(document.querySelectorAll('table'), function (t) {
        return {cls: t.className, rows: t.tBodies[0] ? t.tBodies[0].rows.length : 0}; })
    };
    var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function click() {  // a click on a legend entry of figure CLICK.figure
    var gd = document.getElementById(CLICK.figure), before = summary(gd).visible;
    var item = Array.prototype.filter.call(gd.querySelectorAll('.legend .traces'), function (t) {
      return t.querySelector('.legendtext').textContent === CLICK.entry; })[0];
    if (!item) { finish({error: 'no legend entry ' + CLICK.entry}); return; }
    var toggle = item.querySelector('.legendtoggle');
    ['mousedown', 'mouseup'].forEach(function (type) {
      toggle.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, view: window, button: 0}));
    });
    setTimeout(function () {  // a single click acts once the double-click delay has passed
      var group = (gd._fullData || []).filter(function (t) { return t.legendgroup === CLICK.entry; });
      finish({entry: CLICK.entry, before: before, after: summary(gd).visible, group: group.length,
              hidden: group.filter(function (t) { return t.visible === 'legendonly'; }).length});
    }, 1000);
  }
  function poll() {
    var divs = document.querySelectorAll('.plotly-graph-div');
    var drawn = document.querySelectorAll('.plotly-graph-div[data-drawn="1"]').length;
    if (drawn < divs.length && 20 * tries++ < WAIT) { setTimeout(poll, 20); return; }
    if (CLICK) { click(); } else { finish(null); }
  }
  poll();
});
</script>"""


def probe(page: str, click: dict | None = None, wait_ms: int = 30_000) -> str:
    """`page` with the error hook first in <head> and the summary script last in <body>.
    click: {"figure": div id, "entry": legend text} to click that legend entry after drawing;
    wait_ms: how long (virtual time) to wait for the figures before writing the summary anyway."""
    hooked = re.sub(r"<head>", "<head>" + HOOK, page, count=1, flags=re.IGNORECASE)
    assert hooked != page, "page has no <head>"
    at = hooked.lower().rindex("</body>")
    return hooked[:at] + PROBE % {"click": json.dumps(click), "wait": wait_ms} + hooked[at:]


def chromium(*args: str, profile: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh (or the given) profile folder."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as tmp:
        flags = [*FLAGS, f"--user-data-dir={profile or tmp}"]
        return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


def render(path: Path, *, budget_ms: int = 60_000, timeout: float = 300) -> tuple[dict, list[str], float]:
    """Load `path` (a probed page) with `--dump-dom`: (probe summary, JS errors, wall seconds of chromium).
    `budget_ms` must leave the probe its wait_ms and a second for a legend click."""
    started = time.perf_counter()
    proc = chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", path.resolve().as_uri(), timeout=timeout)
    seconds = time.perf_counter() - started
    dom = proc.stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    errors = re.search(r'<html[^>]*data-js-errors="([^"]*)"', dom)
    assert found and errors, f"no probe output (rc {proc.returncode}): {dom[-800:]} {proc.stderr[-1500:]}"
    return json.loads(html.unescape(found.group(1))), json.loads(html.unescape(errors.group(1))), seconds


def screenshot(path: Path, shot: Path, *, width: int = 1400, height: int = 2600, budget_ms: int = 60_000) -> Path:
    """A PNG of the first `height` pixels of `path` once its scripts have run."""
    chromium(f"--screenshot={shot.resolve()}", f"--window-size={width},{height}",
             f"--virtual-time-budget={budget_ms}", path.resolve().as_uri())
    assert shot.exists(), f"no screenshot of {path}"
    return shot
