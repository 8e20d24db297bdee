"""Per-batch energy telemetry to Parquet (schema in `workloads.telemetry.schema`)."""
from workloads.telemetry.schema import SCHEMA_VERSION, TABLES, arrow_schema
from workloads.telemetry.writer import EnergyLog, PartWriter, block_stats

__all__ = ["SCHEMA_VERSION", "TABLES", "arrow_schema", "EnergyLog", "PartWriter", "block_stats"]
