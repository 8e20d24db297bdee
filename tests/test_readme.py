"""The README documents the telemetry schema exactly as the writer defines it."""
from pathlib import Path

from workloads.telemetry.schema import TABLES, markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_schema_matches_the_code():
    for table in TABLES:
        assert markdown(table) in README, f"README schema of `{table}` is stale: regenerate it from schema.markdown"


def test_the_with_your_tools_python_runs_as_written_on_a_real_sweep(tmp_path):
    """The README's pandas / pyarrow / duckdb / polars lines, run on a real trained sweep in place of
    runs/fgsm-co: each reads every trial, `trial` a string."""
    import re

    from support.trained import trained, trial_of

    section = README.split("### With your tools", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    sweep = trained("erm")
    scope: dict = {}
    exec(code.replace('"runs/fgsm-co"', repr(str(sweep))), scope)  # noqa: S102
    tid = trial_of(sweep)
    assert set(scope["batches"]["trial"]) == {tid} and scope["batches"]["trial"].dtype.kind in "OT"
    assert scope["epochs"].column("trial").type == "string" and scope["epochs"].num_rows == 4  # 2 epochs x 2 splits
    assert scope["dE"]["trial"].to_list() == [tid]
    assert scope["val"].height == 2 and scope["val"]["trial"].dtype.is_(__import__("polars").String)
