"""Experiment trackers (`tracking=[mlflow,wandb,tensorboard]`) against the real libraries, offline, read
back with each library's own reader: MLflow's `search_runs` / `get_metric_history` on its sqlite store,
W&B's `wandb leet inspect --json` on its offline run folders, TensorBoard's EventAccumulator.

The trial is a real finished one (`support.trained`: ERM, 2 epochs of 16 steps, 2,000 Fashion-MNIST
images); `staged` lays out its files as they are after epoch 0 and then after epoch 1, so the trackers
are fed epoch by epoch, as during training.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from orchestrator.tracking import TrackingCallback, TrackingSync
from orchestrator.tracking.feed import BATCH_VALUES, new_epochs, scan
from orchestrator.tracking.trackers import check_trackers
from support.synth import synth_trial, write_sweep
from support.trained import trained, trial_of
from workloads.config import ConfigError, from_dict, trial_id
from workloads.run_dir import RunDir
from workloads.telemetry.schema import arrow_schema

ALL = ["mlflow", "tensorboard", "wandb"]
WANDB = [str(Path(sys.executable).parent / "wandb")]


@pytest.fixture(autouse=True)
def offline(tmp_path_factory, monkeypatch):
    """W&B offline and quiet, its own config/cache in a temp folder; the stores' env vars unset."""
    home = tmp_path_factory.mktemp("wandb-home")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home))
    for var in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


class StandInTrial:
    """Stands in for Ray Tune's Trial in the callback's calls: only `last_result` and `config` are read."""

    def __init__(self, tid: str):
        self.last_result: dict = {}
        self.config = {"trial": tid}


def staged(src: Path, out: Path, tid: str, upto: int) -> None:
    """`out` holds the trial of `src` as it was after epoch `upto`: its config, and its rows of epochs
    0..upto, one part file per epoch (the parts a later stage adds are new files, as in training)."""
    if not out.exists():
        shutil.copytree(src / "trials", out / "trials")
    for table in ("batches", "epochs", "probes"):
        rows = scan(RunDir(src), table, tid).collect()
        folder = RunDir(out).table(table, tid)
        folder.mkdir(parents=True, exist_ok=True)
        for epoch in range(upto + 1):
            part = folder / f"part-{epoch:06d}.parquet"
            if not part.exists():
                pq.write_table(rows.filter(pl.col("epoch") == epoch).to_arrow().cast(arrow_schema(table)), part)


def wandb_records(run_folder: Path) -> list[dict]:
    r = subprocess.run([*WANDB, "leet", "inspect", "--json", str(run_folder)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wandb_summary(run_folder: Path) -> dict:
    r = subprocess.run([*WANDB, "leet", "inspect", "--summary", "--json", str(run_folder)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wandb_history(folders: list[Path]) -> list[dict]:
    """History rows of the run's offline folders, in step order (a resumed run adds a folder)."""
    rows = [rec["history"] for f in folders for rec in wandb_records(f) if rec["type"] == "history"]
    return sorted(({"step": int(h["step"]["num"]), **h["item"]} for h in rows), key=lambda h: h["step"])


def mlflow_runs(out: Path):
    import mlflow

    mlflow.set_tracking_uri(RunDir(out).mlflow_uri())
    return mlflow.search_runs(experiment_names=[out.resolve().name])


def mlflow_history(run_id: str, key: str, uri: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return [(m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)]


def tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_text(acc, tag: str) -> str:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto).item().decode()


def same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """The same steps, and the same values (float32 as logged)."""
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def val_curve(out: Path, tid: str) -> list[tuple[int, float]]:
    """(step, val acc_pgd) of every epoch, from the epochs table."""
    rows = scan(RunDir(out), "epochs", tid).filter(pl.col("split") == "val").sort("epoch").collect()
    return list(zip(rows["step"].to_list(), rows["acc_pgd"].to_list()))


@pytest.mark.slow
def test_a_trial_reaches_every_tracker_once_through_the_tune_callback(tmp_path):
    """Epoch 0, then (a new driver, as after Tuner.restore: the callback pickled and restored) epoch 1 and the
    trial's end, then a third sync with nothing new: one run per tracker holding the config, each epoch's
    metrics once at the epoch's last step with the epochs table's values, the batch stream, the final results."""
    src = trained("erm")
    tid = trial_of(src)
    out = tmp_path / "sweep-a"
    result = RunDir(src).read_result(tid)
    staged(src, out, tid, upto=0)
    RunDir(out).write_result(tid, result | {"status": "running"})
    trial = StandInTrial(tid)
    callback = TrackingCallback(out, ALL)
    callback.on_trial_result(0, [trial], trial, {"trial": tid, "epoch": 0})
    assert not callback.sync.errors
    state = RunDir(out).read_tracking(tid)
    assert {n: state[n]["last_epoch"] for n in ALL} == dict.fromkeys(ALL, 0)

    callback.on_experiment_end([trial])  # the first driver ends (interrupted) ...
    callback = pickle.loads(pickle.dumps(callback))  # ... and Tuner.restore brings back its saved callbacks
    staged(src, out, tid, upto=1)
    RunDir(out).write_result(tid, result)
    trial.last_result = {"trial": tid, "epoch": 1}
    callback.on_trial_result(1, [trial], trial, {"trial": tid, "epoch": 1})
    callback.on_trial_complete(1, [trial], trial)
    again = TrackingSync(out, ALL)
    again.update(tid)
    again.finish(tid)
    assert not callback.sync.errors and not again.errors

    curve = val_curve(src, tid)  # [(15, ...), (31, ...)]
    assert [s for s, _ in curve] == [15, 31]
    epochs = new_epochs(RunDir(src), tid, -1)
    stream = [(p.step, p.metrics["batch/loss"]) for e in epochs for p in e.points if "batch/loss" in p.metrics]
    assert len(stream) == 32  # 16 steps an epoch: fewer than 20, one point a step

    # MLflow: one run (reused after the restore), params, histories, tags, status
    runs = mlflow_runs(out)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.method.name"] == "erm" and float(run["params.attack.eps"]) == 0.1
    assert run["status"] == "FINISHED" and run["tags.status"] == "finished" and run["tags.trial"] == tid
    assert run["metrics.test_acc_pgd"] == pytest.approx(result["test_acc_pgd"])
    assert run["metrics.best_val_acc_pgd"] == pytest.approx(result["best_val_acc_pgd"])
    uri = RunDir(out).mlflow_uri()
    same(mlflow_history(run.run_id, "val_acc_pgd", uri), curve)
    same(mlflow_history(run.run_id, "batch/loss", uri), stream)
    assert [s for s, _ in mlflow_history(run.run_id, "probe_acc_pgd", uri)] == [15, 31]
    assert len(mlflow_history(run.run_id, "test_acc_pgd", uri)) == 1  # the final results once
    assert state["mlflow"]["run_id"] == run.run_id

    # W&B: the same run id in both drivers' offline folders, each step once
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # the second driver resumed the run (W&B offline: a folder each)
    ids = {wandb_summary(f)["run_id"] for f in folders}
    assert ids == {RunDir(out).read_tracking(tid)["wandb"]["id"]} and next(iter(ids)).startswith(tid)
    history = wandb_history(folders)
    steps = [h["step"] for h in history]
    assert steps == sorted(set(steps)) == list(range(32))  # monotonic, no step twice
    same([(h["step"], h["val_acc_pgd"]) for h in history if "val_acc_pgd" in h], curve)
    same([(h["step"], h["batch/loss"]) for h in history], stream)
    last = wandb_summary(folders[-1])
    assert last["state"] == "finished" and last["config"]["method.name"] == "erm"
    assert last["config"]["attack.eps"] == 0.1 and last["config"]["trial_id"] == tid
    assert last["summary"]["test_acc_pgd"] == pytest.approx(result["test_acc_pgd"])
    assert last["summary"]["status"] == "finished" and "reason" not in last["summary"]

    # TensorBoard: scalars at their steps, each once, the stop text, HParams with the config
    acc = tensorboard(RunDir(out).tensorboard(tid))
    same([(e.step, e.value) for e in acc.Scalars("val_acc_pgd")], curve)
    same([(e.step, e.value) for e in acc.Scalars("batch/loss")], stream)
    assert set(BATCH_VALUES) - {"aae_frac"} <= {t.removeprefix("batch/") for t in acc.Tags()["scalars"]}
    assert tb_text(acc, "stop") == "status: finished"
    hp = tensorboard(RunDir(out).tensorboard(tid) / "hparams")
    assert [e.value for e in hp.Scalars("test_acc_pgd")] == pytest.approx([result["test_acc_pgd"]])
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        hp.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["method.name"].string_value == "erm"
    assert start.hparams["attack.eps"].number_value == pytest.approx(0.1)


def test_the_stop_reason_reaches_every_tracker_and_the_stores_follow_their_env_vars(tmp_path, monkeypatch):
    """A stopped trial: a copy of the finished trial whose result.json is rewritten as stopped, with a reason,
    through RunDir.write_result (training one that the stopper stops costs minutes). MLFLOW_TRACKING_URI
    and WANDB_DIR name stores outside the run dir: they are used."""
    src = trained("erm")
    tid = trial_of(src)
    out = tmp_path / "stopped"
    shutil.copytree(src, out)
    reason = "co_pgd_probe after epoch 2: probe PGD accuracy fell from 0.44 to 0.05"
    result = RunDir(out).read_result(tid) | {"status": "stopped", "stopped_by": "co_pgd_probe", "reason": reason}
    RunDir(out).write_result(tid, result)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.chdir(tmp_path)  # MLflow keeps a user store's artifacts in ./mlruns, as its own CLI does
    sync = TrackingSync(out, ALL)
    sync.finish(tid)  # pushes the epochs first
    assert not sync.errors
    assert not (out / "mlflow.db").exists() and not (out / "wandb").exists()
    assert list((tmp_path / "mlruns").glob("*/*/artifacts/result.json"))  # the trial's files went with the store

    run = mlflow_runs(out).iloc[0]
    assert (run["tags.status"], run["tags.stopped_by"], run["tags.reason"]) == ("stopped", "co_pgd_probe", reason)
    assert run["status"] == "FINISHED" and run["metrics.test_acc_pgd"] == pytest.approx(result["test_acc_pgd"])
    (folder,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    summary = wandb_summary(folder)["summary"]
    assert (summary["status"], summary["stopped_by"], summary["reason"]) == ("stopped", "co_pgd_probe", reason)
    acc = tensorboard(RunDir(out).tensorboard(tid))
    assert tb_text(acc, "stop").split("  \n") == ["status: stopped", "stopped_by: co_pgd_probe", f"reason: {reason}"]
    assert len(acc.Scalars("val_acc_pgd")) == 2


def test_the_batch_stream_is_about_20_means_an_epoch_from_the_visible_parts(tmp_path):
    """50 steps an epoch -> 20 points, each the mean of its run of steps at the run's last step; a merged part
    that covers two others (left by a crash in a compaction) is read once."""
    tables = synth_trial("t", epochs=3, steps=50)
    out = write_sweep(tmp_path / "synth", {"t": tables})
    folder = RunDir(out).table("batches", "t")
    merged = pl.concat([pl.read_parquet(folder / f"part-{i:06d}.parquet") for i in (0, 1)])
    pq.write_table(merged.to_arrow().cast(arrow_schema("batches")), folder / "part-000000-000001.parquet")
    epochs = new_epochs(RunDir(out), "t", -1)
    assert [e.epoch for e in epochs] == [0, 1, 2]
    batches = pl.from_arrow(tables["batches"]).sort("step")
    for e in epochs:
        stream, (epoch_point,) = e.points[:-1], e.points[-1:]
        assert len(stream) == 20
        steps = batches.filter(pl.col("epoch") == e.epoch)["step"].to_list()
        assert [p.step for p in stream][-1] == steps[-1] == epoch_point.step
        assert np.all(np.diff([p.step for p in stream]) > 0)
        first = batches.filter(pl.col("step").is_between(steps[0], stream[0].step))
        assert stream[0].metrics["batch/de"] == pytest.approx(first["de"].mean())
        assert epoch_point.metrics["epoch"] == e.epoch and "val_acc_pgd" in epoch_point.metrics
    assert new_epochs(RunDir(out), "t", 1)[0].epoch == 2  # only epochs after the last one pushed


@pytest.mark.parametrize("override, hint", [
    ("tracking=[mlflw]", "tracking: unknown tracker 'mlflw'; allowed: mlflow, tensorboard, wandb"),
    ("tracking=[tensorboard,neptune]", "tracking: unknown tracker 'neptune'; allowed: mlflow, tensorboard, wandb"),
])
def test_an_unknown_tracker_is_one_line_before_any_work(tmp_path, capsys, override, hint):
    assert main(["train", override, f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"energy-at train: error: {hint}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tracker, missing, line", [
    ("mlflow", "mlflow", "tracking: mlflow is not installed: pip install 'energy-at[mlflow]'"),
    ("mlflow", "sqlalchemy",
     "tracking: mlflow is not installed (no module sqlalchemy): pip install 'energy-at[mlflow]'"),
    ("wandb", "wandb", "tracking: wandb is not installed: pip install 'energy-at[wandb]'"),
    ("tensorboard", "tensorboardX", "tracking: tensorboard is not installed: pip install 'energy-at[tensorboard]'"),
])
def test_a_tracker_not_installed_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, tracker, missing, line):
    """Not installed is simulated: importlib.util.find_spec answers None for that module."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name, *a))
    assert main(["train", f"tracking=[{tracker}]", f"out={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"energy-at train: error: {line}"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="not installed") as e:
        TrackingSync(tmp_path / "out", [tracker])
    assert e.value.field == "tracking"
    with pytest.raises(ConfigError) as e:
        check_trackers([tracker], "sweep.tracking")  # what `energy-at sweep sweep.tracking=[...]` says
    assert str(e.value).startswith("sweep.tracking: ")


def test_tracking_is_not_part_of_the_trial_id(tmp_path):
    """Trackers and the stop rule are the runner's (RunConfig), not the trial's: they leave its id alone."""
    from orchestrator.config import RunConfig

    base = {"method": {"name": "fgsm"}, "out": str(tmp_path)}
    run = from_dict(base | {"tracking": ["mlflow", "wandb"], "stop_on": []}, RunConfig)
    assert trial_id(run) == trial_id(from_dict(base)) == trial_id(from_dict(base, RunConfig))


def energy_at(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=900, env=None if env is None else os.environ | env)


TINY = ["data.subset=500", "data.val_size=100", "data.probe_size=64", "data.test_size=100", "epochs=2",
        "eval.pgd_steps=2", "threads=1", "device=cpu"]


@pytest.mark.slow
def test_energy_at_train_with_mlflow_and_tensorboard(tmp_path):
    """The real command: `energy-at train ... tracking=[mlflow,tensorboard]`; both stores read back."""
    out = tmp_path / "demo"
    r = energy_at("train", *TINY, "stop_on=[]", f"out={out}", "tracking=[mlflow,tensorboard]")
    assert r.returncode == 0, r.stderr
    assert "tracking of trial" not in r.stderr  # no tracker failed
    (tid,) = RunDir(out).trial_ids()
    result, curve = RunDir(out).read_result(tid), val_curve(out, tid)
    assert len(curve) == 2
    run = mlflow_runs(out).iloc[0]
    assert run["params.method.name"] == "fgsm" and run["tags.status"] == result["status"]
    assert run["metrics.test_acc_pgd"] == pytest.approx(result["test_acc_pgd"])
    same(mlflow_history(run.run_id, "val_acc_pgd", RunDir(out).mlflow_uri()), curve)
    assert [s for s, _ in mlflow_history(run.run_id, "batch/de", RunDir(out).mlflow_uri())] == list(range(8))
    # the trial's config and result as artifacts, equal to the files under <out>
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=RunDir(out).mlflow_uri())
    assert sorted(a.path for a in client.list_artifacts(run.run_id)) == ["config.json", "result.json"]
    for name in ("config.json", "result.json"):
        copy = Path(client.download_artifacts(run.run_id, name, str(tmp_path)))
        assert json.loads(copy.read_text()) == json.loads((RunDir(out).trial(tid) / name).read_text())
    acc = tensorboard(RunDir(out).tensorboard(tid))
    same([(e.step, e.value) for e in acc.Scalars("val_acc_pgd")], curve)
    assert tb_text(acc, "stop").startswith(f"status: {result['status']}")


@pytest.mark.slow
def test_train_multirun_syncs_each_trial(tmp_path):
    """`energy-at train -m` (Hydra's task) passes the same on_epoch and finish: two trials, two TensorBoard runs."""
    out = tmp_path / "grid"
    r = energy_at("train", "-m", "method=erm", "seed=0,1", *TINY[:4], "epochs=1", "eval.pgd_steps=1", "threads=1",
                  "device=cpu", f"out={out}", "tracking=[tensorboard]")
    assert r.returncode == 0, r.stderr
    tids = RunDir(out).trial_ids()
    assert len(tids) == 2
    for tid in tids:
        acc = tensorboard(RunDir(out).tensorboard(tid))
        same([(e.step, e.value) for e in acc.Scalars("val_acc_pgd")], val_curve(out, tid))
        assert tb_text(acc, "stop") == "status: finished"
        assert RunDir(out).read_tracking(tid)["tensorboard"]["last_epoch"] == 0


@pytest.mark.slow
def test_a_sweep_feeds_the_trackers_from_the_tune_driver(tmp_path):
    """`energy-at sweep sweep.tracking=[mlflow,tensorboard]`: the driver's TrackingCallback gives each trial
    one MLflow run and one TensorBoard run with its curve and outcome; a trial-level `tracking=` is refused."""
    out = tmp_path / "s"
    r = energy_at("sweep", "sweep=smoke", "sweep.report=false", f"sweep.out={out}", "sweep.tracking=[mlflow,tensorboard]")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "tracking of trial" not in r.stderr + r.stdout  # no tracker failed
    tids = RunDir(out).trial_ids()
    assert len(tids) == 2
    runs = mlflow_runs(out).set_index("tags.trial")
    assert sorted(runs.index) == tids and sorted(runs["params.method.name"]) == ["fgsm", "rs_fgsm"]
    for tid in tids:
        result, curve = RunDir(out).read_result(tid), val_curve(out, tid)
        assert runs.loc[tid, "tags.status"] == result["status"] and len(curve) >= 1
        same(mlflow_history(runs.loc[tid, "run_id"], "val_acc_pgd", RunDir(out).mlflow_uri()), curve)
        acc = tensorboard(RunDir(out).tensorboard(tid))
        same([(e.step, e.value) for e in acc.Scalars("val_acc_pgd")], curve)

    # the README's read-back line ("With your tools"), run as written on this sweep's store
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith('python -c "import mlflow'))
    code = line.split('"', 1)[1].rsplit('"', 1)[0].replace("runs/tracked", str(out)).replace("'tracked'", repr(out.name))
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and all(tid in shown.stdout for tid in tids), shown.stdout + shown.stderr

    bad = energy_at("sweep", "sweep=smoke", f"sweep.out={tmp_path / 'bad'}", "tracking=[mlflow]")
    assert bad.returncode == 2 and "sweep.tracking=[mlflow]" in bad.stderr and not (tmp_path / "bad").exists()
