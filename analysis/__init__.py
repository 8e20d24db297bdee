"""Offline analysis of sweep telemetry: reading, detectors, ranking, CLI commands.

    from analysis import SweepLogs, detect, trial_metrics, rank

    sweep = SweepLogs(["runs/sweep-a"])
    events = detect(sweep.scan("batches"), sweep.scan("epochs"), sweep.scan("probes"))
    table = rank(trial_metrics(sweep.scan("epochs"), events), sweep.trials())
"""
from analysis.detectors import co_energy, co_pgd_probe, detect, nan, ro
from analysis.rank import export, rank, trial_metrics
from analysis.read import SweepLogs, SweepError

__all__ = [
    "SweepLogs",
    "SweepError",
    "co_energy",
    "co_pgd_probe",
    "detect",
    "export",
    "nan",
    "rank",
    "ro",
    "trial_metrics",
]
