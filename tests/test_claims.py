"""benchmarks/claims.py: the claims table on the committed corpus, and its written verdict rules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import claims  # noqa: E402


@pytest.fixture(scope="module")
def table() -> dict:
    return claims.claims()


def _in01(v) -> bool:
    return v is not None and 0.0 <= v <= 1.0


def test_script_runs_on_the_committed_corpus() -> None:
    for fmt in ("md", "json"):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--format", fmt],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        if fmt == "json":
            r = json.loads(out.stdout)
            assert {"corpus", "points", "comparisons", "energy", "energy_verdicts", "apart"} <= set(r)
        else:
            assert "| # | claim (source) |" in out.stdout and "runs of their own" in out.stdout


def test_every_testable_row_has_seeds_and_numbers_in_range(table) -> None:
    assert table["corpus"]["trials"] >= 1 and table["comparisons"]
    for row in table["comparisons"]:
        assert row["verdict"] in {"reproduced", "not reproduced", "not testable here"}
        for side in (row["method"], row["comparison"]):
            assert side["n"] >= 1, f"{side['point']}: no seed in the corpus"
            assert len(side["seeds"]) == side["n"]
            for key in ("final_mean", "best_mean", "collapse_rate"):
                assert _in01(side[key]), (side["point"], key, side[key])
            assert side["final_mean"] <= side["best_mean"] + 1e-9
            for key in ("final_sd", "best_sd"):
                assert side[key] is None or 0.0 <= side[key] <= 1.0
    sources = {(e["point"], e["source"]) for e in table["energy"]}
    assert sources == {(p, s) for p in claims.ENERGY_POINTS for s in ("probe", "batch")}
    for e in table["energy"]:
        assert e["n"] >= 1 and e["first_mean"] is not None and e["drift_mean"] is not None
    assert [v["source"] for v in table["energy_verdicts"]] == ["probe", "batch"]
    assert all(n["commands"] for n in table["apart"])


def test_every_claim_run_apart_has_its_section_in_the_docs(table) -> None:
    headings = [line.lstrip("#").strip() for line in (ROOT / "docs" / "claims.md").read_text().splitlines()
                if line.startswith("### ")]
    for n in table["apart"]:
        assert any(h.startswith(n["section"]) for h in headings), f"claim {n['claim']}: no section {n['section']!r}"


def test_der_is_compared_with_its_recorded_base(table) -> None:
    bases = {r["comparison_point"] for r in table["comparisons"] if r["claim"] == "1"} - {"fgsm-e0.30-n20k"}
    assert bases and all(b.endswith("-e0.30-n20k") for b in bases)


def _side(n, rate, final, sd):
    return {"n": n, "collapse_rate": rate, "final_mean": final, "final_sd": sd}


@pytest.mark.parametrize("m, c, expected", [
    # lower collapse rate, mean final 0.30 above the comparison's, larger sd 0.10: reproduced
    (_side(3, 0.0, 0.45, 0.05), _side(3, 2 / 3, 0.15, 0.10), "reproduced"),
    # the gap (0.08) is within the larger sd (0.10)
    (_side(3, 0.0, 0.23, 0.05), _side(3, 2 / 3, 0.15, 0.10), "not reproduced"),
    # collapse rate not lower, although the accuracy gap is large
    (_side(3, 2 / 3, 0.45, 0.05), _side(3, 2 / 3, 0.15, 0.10), "not reproduced"),
    # the comparison never collapses: nothing to avoid in this setting
    (_side(3, 0.0, 0.45, 0.05), _side(3, 0.0, 0.15, 0.10), "not testable here"),
    # one seed on a side: no sd
    (_side(1, 0.0, 0.45, None), _side(3, 1.0, 0.15, 0.10), "not testable here"),
    (_side(3, 0.0, 0.45, 0.05), None, "not testable here"),
])
def test_co_verdict_follows_its_written_rule(m, c, expected) -> None:
    assert claims.co_verdict(m, c)[0] == expected


def _de(n, drift, sd, late):
    return {"n": n, "drift_mean": drift, "drift_sd": sd, "late_mean": late}


@pytest.mark.parametrize("pgd, trades, expected", [
    (_de(2, -0.55, 0.10, -0.70), _de(2, -0.02, 0.05, -0.04), "reproduced"),  # the papers' picture
    (_de(2, -0.10, 0.10, -0.25), _de(2, -0.02, 0.05, -0.04), "not reproduced"),  # drifts within the sd
    (_de(2, -0.55, 0.10, -0.70), _de(2, -0.02, 0.05, -0.90), "not reproduced"),  # TRADES further from 0
    (_de(2, 0.20, 0.10, 0.30), _de(2, 0.60, 0.05, -0.04), "not reproduced"),  # PGD-AT drifts up
    (_de(1, -0.55, None, -0.70), _de(2, -0.02, 0.05, -0.04), "not testable here"),
])
def test_energy_verdict_follows_its_written_rule(pgd, trades, expected) -> None:
    assert claims.energy_verdict(pgd, trades)[0] == expected


@pytest.mark.parametrize("labels, expected", [
    (["robust_overfitting", "robust_overfitting", "healthy"], "reproduced"),  # 2 of 3
    (["robust_overfitting", "healthy", "healthy"], "not reproduced"),
    (["robust_overfitting"], "not testable here"),  # one seed
])
def test_ro_share_verdict_follows_its_written_rule(labels, expected) -> None:
    assert claims.ro_share_verdict(labels)[0] == expected


@pytest.mark.parametrize("method, pgd, overfits, expected", [
    ([0.01, 0.02, 0.015], [0.08, 0.07, 0.09], True, "reproduced"),  # 0.065 lower, sd 0.01
    ([0.07, 0.09, 0.06], [0.08, 0.07, 0.09], True, "not reproduced"),  # within the sd
    ([0.20, 0.21, 0.19], [0.08, 0.07, 0.09], True, "contradicted"),
    ([0.01, 0.02, 0.015], [0.08, 0.07, 0.09], False, "not testable here"),  # claim 6 failed: nothing to reduce
    ([0.01], [0.08, 0.07, 0.09], True, "not testable here"),
])
def test_ro_gap_verdict_follows_its_written_rule(method, pgd, overfits, expected) -> None:
    assert claims.ro_gap_verdict(method, pgd, overfits)[0] == expected


def test_spearman_verdict_needs_an_interval_above_zero() -> None:
    x = [0.1 * i for i in range(12)]
    assert claims.spearman_verdict(x, [v + 0.01 * (i % 2) for i, v in enumerate(x)], True)[0] == "reproduced"
    assert claims.spearman_verdict(x, [1 - v for v in x], True)[0] == "not reproduced"  # perfectly negative
    assert claims.spearman_verdict(x, [(7 * i) % 12 for i in range(12)], True)[0] == "not reproduced"  # no order
    assert claims.spearman_verdict(x, x, False)[0] == "not testable here"
