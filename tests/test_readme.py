"""The README documents the telemetry schema exactly as the writer defines it."""
from pathlib import Path

from workloads.telemetry.schema import TABLES, markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_schema_matches_the_code():
    for table in TABLES:
        assert markdown(table) in README, f"README schema of `{table}` is stale: regenerate it from schema.markdown"
