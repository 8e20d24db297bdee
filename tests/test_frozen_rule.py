"""The default stop rule was frozen in a commit before the `outside` trials that score it were trained (its
second version before test seed 13 and outside seeds 14-15), and `ro`'s defaults before the RO segments' test
trials entered the corpus (its third choice, the val fall, before the label-noise segment's test seeds 16-18).

Reads the repository's history: the frozen commit is an ancestor of HEAD, the rule's numbers (the trigger's
constants, co_pgd_probe's thresholds, DEFAULT_STOP_ON) are the same now as there, and every commit whose
corpus holds `outside` trials comes after it. A checkout without that history (a shallow clone) skips.
"""
from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "detection"))
from corpus import RO_FALL_SEEDS  # noqa: E402
FROZEN = "d927909fd833706d07ff4000c00cba6512354a62"  # docs/detection.md "The energy trigger": frozen before the outside split was trained
TRIALS = "benchmarks/detection/corpus/trials.parquet"


def git(*args: str, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=not binary)


@pytest.fixture(scope="module")
def frozen() -> str:
    found = git("rev-parse", "--verify", "--quiet", f"{FROZEN}^{{commit}}")
    if found.returncode:
        pytest.skip(f"commit {FROZEN} is not in this checkout's history (a shallow clone?)")
    return found.stdout.strip()


def constants(source: str, names: set[str]) -> dict:
    """Module-level `NAME = literal` values of `source`."""
    out = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id in names and node.value is not None:
            out[target.id] = ast.literal_eval(node.value)
    return out


def defaults(source: str, function: str) -> dict:
    """Keyword defaults of a module-level function of `source`."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == function)
    return {a.arg: ast.literal_eval(d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None}


def at(commit: str, path: str) -> str:
    return git("show", f"{commit}:{path}").stdout


def test_the_frozen_commit_is_an_ancestor_and_the_rule_is_unchanged_since(frozen: str) -> None:
    assert git("merge-base", "--is-ancestor", frozen, "HEAD").returncode == 0
    trigger = {"TRIGGER_SIGNALS", "K", "H", "WARMUP", "LOOKS_PER_EPOCH", "MIN_VALUES"}
    then = constants(at(frozen, "workloads/telemetry/trigger.py"), trigger)
    assert set(then) == trigger
    assert then == constants((ROOT / "workloads/telemetry/trigger.py").read_text(), trigger)
    assert defaults(at(frozen, "analysis/detectors.py"), "co_pgd_probe") == \
        defaults((ROOT / "analysis/detectors.py").read_text(), "co_pgd_probe")
    stop_on = {"DEFAULT_STOP_ON"}  # then in workloads/config.py, now the runner's (orchestrator/config.py)
    assert constants(at(frozen, "workloads/config.py"), stop_on) == \
        constants((ROOT / "orchestrator/config.py").read_text(), stop_on)


LIVE_TEST_SEEDS = (12,)  # benchmarks/detection/corpus.py SPLITS: test seeds trained with the frozen trigger live


FROZEN_V2 = "d2268bba87c925f464b28dc7472ed87b2d1a885e"  # docs/detection.md "The rule's second freeze"
V2_SEEDS = (13, 14, 15, 22)  # corpus.SPLITS: added in that commit (22: later, the rule unchanged), trained after it


def function_source(source: str, name: str) -> str:
    """A module-level function of `source`, as its syntax tree (docstring and comments aside)."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    fn.body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body
    return ast.dump(fn)


def test_the_second_freeze_precedes_its_trials_and_the_rule_is_unchanged_since() -> None:
    if git("rev-parse", "--verify", "--quiet", f"{FROZEN_V2}^{{commit}}").returncode:
        pytest.skip(f"commit {FROZEN_V2} is not in this checkout's history (a shallow clone?)")
    assert git("merge-base", "--is-ancestor", FROZEN_V2, "HEAD").returncode == 0
    now = (ROOT / "analysis/detectors.py").read_text()
    for fn in ("co_pgd_probe", "_probe_rows"):
        assert function_source(at(FROZEN_V2, "analysis/detectors.py"), fn) == function_source(now, fn), fn
    for commit in git("log", "--format=%H", "--", TRIALS).stdout.split():
        blob = git("show", f"{commit}:{TRIALS}", binary=True).stdout
        if blob and pl.read_parquet(io.BytesIO(blob)).filter(pl.col("seed").is_in(V2_SEEDS)).height:
            assert git("merge-base", "--is-ancestor", FROZEN_V2, commit).returncode == 0, commit
            assert commit != FROZEN_V2


def test_outside_and_live_test_trials_enter_the_corpus_only_after_the_freeze(frozen: str) -> None:
    commits = git("log", "--format=%H", "--", TRIALS).stdout.split()
    assert commits
    scored = []
    for commit in commits:
        blob = git("show", f"{commit}:{TRIALS}", binary=True).stdout
        t = pl.read_parquet(io.BytesIO(blob)) if blob else pl.DataFrame({"split": [], "seed": []})
        if t.filter((pl.col("split") == "outside") | pl.col("seed").is_in(LIVE_TEST_SEEDS)).height:
            scored.append(commit)
    for commit in scored:
        assert git("merge-base", "--is-ancestor", frozen, commit).returncode == 0, commit
        assert commit != frozen


FROZEN_RO = "73ce198d43634a4188ccaa7cafd946638a0412c1"  # docs/detection.md "Robust overfitting": ro's defaults, from the segment's dev split


FROZEN_RO_NOISE = "1e9e18887cd048997938b3583468546654dab003"  # docs/detection.md "Robust overfitting with label noise": ro's defaults re-chosen
FROZEN_RO_FALL = "d3065d94fea0ed0729fa091879d1726e3c18a48d"  # docs/detection.md "Robust overfitting: the val-fall rule": ro's defaults, third choice
LATEST_RO_FREEZE = FROZEN_RO_FALL


@pytest.mark.parametrize("frozen_ro, segment, seeds", [(FROZEN_RO, "ro", None), (FROZEN_RO_NOISE, "ro_noise", None),
                                                        (FROZEN_RO_FALL, "ro_noise", RO_FALL_SEEDS)])
def test_ro_defaults_frozen_before_each_segments_test_trials_entered_the_corpus(frozen_ro: str, segment: str,
                                                                                seeds: tuple[int, ...] | None) -> None:
    """Each RO segment's test trials (those of `seeds`, if given) enter the corpus after the commit that froze the
    `ro` defaults they score; today's defaults are the latest freeze's (each one's held until the next)."""
    if git("rev-parse", "--verify", "--quiet", f"{frozen_ro}^{{commit}}").returncode:
        pytest.skip(f"commit {frozen_ro} is not in this checkout's history (a shallow clone?)")
    assert git("merge-base", "--is-ancestor", frozen_ro, "HEAD").returncode == 0
    assert defaults(at(LATEST_RO_FREEZE, "analysis/detectors.py"), "ro") == \
        defaults((ROOT / "analysis/detectors.py").read_text(), "ro")
    for commit in git("log", "--format=%H", "--", TRIALS).stdout.split():
        blob = git("show", f"{commit}:{TRIALS}", binary=True).stdout
        t = pl.read_parquet(io.BytesIO(blob)) if blob else pl.DataFrame()
        if seeds is not None and "seed" in t.columns:
            t = t.filter(pl.col("seed").is_in(seeds))
        if "segment" in t.columns and t.filter((pl.col("segment") == segment) & (pl.col("split") == "test")).height:
            assert git("merge-base", "--is-ancestor", frozen_ro, commit).returncode == 0, commit
            assert commit != frozen_ro
