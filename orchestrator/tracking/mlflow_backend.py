"""MLflow: one run per trial in the experiment named after the run dir's folder, through MlflowClient.

Store: `RunDir.mlflow_uri()` (`sqlite:///<out>/mlflow.db`, or MLFLOW_TRACKING_URI). Params: the
flattened config; metrics: the feed's points at their global steps (one `log_batch` an epoch); at
the end the final results as metrics at the last step, the stop decision as tags, and the run's
status (FINISHED, or FAILED for a trial that did not run to its end). Artifacts: the trial's
config.json when the run is created, its result.json when it ends (`mlflow artifacts download`, the UI).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.tracking.feed import Point, final_metrics, stop_fields
from workloads.run_dir import RunDir, succeeded

MAX_METRICS, MAX_PARAMS, MAX_PARAM_VALUE = 1000, 100, 6000  # MLflow's log_batch limits


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Run:
    """An open MLflow run of one trial."""

    def __init__(self, client: MlflowClient, run_id: str, result_file: Path):
        self.client, self.run_id, self.result_file = client, run_id, result_file

    def log_epoch(self, points: list[Point]) -> None:
        metrics = [Metric(k, float(v), int(1000 * (p.wall_time or time.time())), p.step)
                   for p in points for k, v in p.metrics.items()]
        for chunk in _chunks(metrics, MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)

    def flush(self) -> None:
        pass

    def finish(self, result: dict, step: int) -> None:
        now = int(1000 * time.time())
        metrics = [Metric(k, v, now, step) for k, v in final_metrics(result).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        for key, value in stop_fields(result).items():
            self.client.set_tag(self.run_id, key, value)
        _log_file(self.client, self.run_id, self.result_file)
        self.client.set_terminated(self.run_id, "FINISHED" if succeeded(result) else "FAILED")

    def close(self) -> None:
        pass  # stays RUNNING until the trial's finish, in this process or after a resume


class Tracker:
    """MLflow for the trials of one run dir."""

    def __init__(self, run_dir: RunDir):
        self.run_dir, self.uri = run_dir, run_dir.mlflow_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiment: str | None = None

    def experiment_id(self) -> str:
        if self._experiment is None:
            name = self.run_dir.root.resolve().name
            found = self.client.get_experiment_by_name(name)
            if found is None:
                own_store = not os.environ.get("MLFLOW_TRACKING_URI")  # artifacts beside the sqlite file, not ./mlruns
                location = (self.run_dir.root.resolve() / "mlartifacts").as_uri() if own_store else None
                try:
                    self._experiment = self.client.create_experiment(name, artifact_location=location)
                except MlflowException:  # another process created it meanwhile
                    self._experiment = self.client.get_experiment_by_name(name).experiment_id
            else:
                self._experiment = found.experiment_id
        return self._experiment

    def open(self, trial: str, config: dict, state: dict) -> Run:
        """The trial's run: the one `state` names (set running again) or a new one with the config as params."""
        run_id = state.get("run_id") if state.get("uri") == self.uri else None
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
            except MlflowException:  # gone from the store
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                return Run(self.client, run_id, self.run_dir.result_file(trial))
        run_id = self.client.create_run(self.experiment_id(), run_name=trial, tags={"trial": trial}).info.run_id
        params = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in config.items()]
        for chunk in _chunks(params, MAX_PARAMS):
            self.client.log_batch(run_id, params=chunk)
        _log_file(self.client, run_id, self.run_dir.config_file(trial))
        state |= {"run_id": run_id, "uri": self.uri}
        return Run(self.client, run_id, self.run_dir.result_file(trial))


def _log_file(client: MlflowClient, run_id: str, path: Path) -> None:
    """`path` as an artifact of the run (replacing an earlier copy), if the trial wrote it."""
    if path.exists():
        client.log_artifact(run_id, str(path))
