"""Experiment trackers, read back with each tool's own reader: a real `mlflow server` (SQLite backend) through
MLflow's client, W&B's offline files, TensorBoard's event files. A tracker that is down costs nothing but a
warning, and what was logged meanwhile arrives once it is back."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from lingudistill import trackers
from lingudistill.spec import JobSpec
from lingudistill.trackers import TrackerUnavailable, check_trackers, open_trackers
from tests.engine.conftest import tiny_job  # noqa: F401 - fixture


def spec(*integrations: dict) -> JobSpec:
    body = {
        "name": "tracked",
        "student": "s3://m/student",
        "teacher": "s3://m/teacher",
        "mixture": [{"name": "text", "uri": "text.jsonl", "distill": True}],
        "training": {"seed": 3, "lr": 2e-5},
        "integrations": list(integrations),
    }
    return JobSpec.model_validate(body)


class Notices(list):
    """Collects (level, message, data) from the trackers; `warnings` are the messages of level warning."""

    def __call__(self, level: str, message: str, data: dict) -> None:
        self.append((level, message, data))

    @property
    def warnings(self) -> list[str]:
        return [message for level, message, _ in self if level == "warning"]


def records(steps: range) -> list[dict]:
    return [{"step": s, "loss": 3.0 - s / 10, "loss_kd": 0.5, "lr": 1e-5} for s in steps]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store and local artifacts; stop() and start() keep its data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1",
        ]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        raise AssertionError("mlflow server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


def mlflow_client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def test_mlflow_gets_the_spec_every_step_the_scores_and_the_report(
    mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    notices = Notices()
    opened = open_trackers(spec({"type": "mlflow", "experiment": "repairs"}), tmp_path, notices)
    for record in records(range(1, 6)):
        opened.log_record(record)
    opened.log_record({"step": 5, "eval/knowledge": 0.75})
    (tmp_path / "report.md").write_text("# report\n")
    opened.log_artifacts([tmp_path / "report.md"])
    opened.close(succeeded=True)
    assert notices.warnings == []

    [link] = opened.links()
    assert notices == [("info", f"mlflow: logging to {link['url']}", {"tracker": link})]
    client = mlflow_client(mlflow_server.url)
    run = client.get_run(link["run_id"])
    assert run.data.params["training.lr"] == "2e-05" and run.data.params["name"] == "tracked"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/knowledge")] == [(5, 0.75)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.md"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert link["url"] == f"{mlflow_server.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def test_an_mlflow_outage_is_one_warning_and_its_metrics_arrive_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MlflowServer(tmp_path).start()
    host = server.url.replace("http://", "http://ops:s3cret@")  # credentials in the URI never reach a message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", host)
    monkeypatch.setattr(trackers, "MAX_RETRY_S", 2.0)
    notices = Notices()
    try:
        opened = open_trackers(spec({"type": "mlflow", "experiment": "outage"}), tmp_path, notices)
        opened.log_record(records(range(1, 2))[0])
        server.stop()
        for record in records(range(2, 7)):
            opened.log_record(record)  # returns at once: the tracker's thread does the waiting
        time.sleep(3)
        server.start()
        opened.close(succeeded=True, timeout_s=60)
        [link] = opened.links()
        history = mlflow_client(server.url).get_metric_history(link["run_id"], "loss")
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    finally:
        server.stop()
    warnings = notices.warnings
    assert len([w for w in warnings if "failed" in w]) == 1, warnings
    assert any("reachable again" in w for w in warnings)
    assert not any("s3cret" in str(notice) for notice in notices)


def wandb_records(path: Path) -> Iterator[bytes]:
    """The protobuf records of a .wandb file: W&B's header (":W&B", magic 0xBEE1, version 0), then LevelDB's log
    format: 32 KiB blocks of chunks, each with a 7-byte header (crc32, length, FULL/FIRST/MIDDLE/LAST)."""
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    position, pending = 7, b""
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too small for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += room
            continue
        if position + 7 + length > len(data):  # a chunk still being written: the records so far
            return
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            yield pending
            pending = b""


def complete_wandb_run(path: Path, timeout_s: float = 60.0) -> list:
    """The records of a run file once W&B's service has written its exit record: the file is written by a separate
    process (wandb-core), which may still be flushing when run.finish() returns."""
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout_s
    while True:
        parsed = []
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            parsed.append(record)
        if any(record.HasField("exit") for record in parsed) or time.monotonic() > deadline:
            return parsed
        time.sleep(0.5)


def test_wandb_offline_files_hold_the_config_and_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    notices = Notices()
    opened = open_trackers(spec({"type": "wandb", "project": "repairs"}), tmp_path, notices)
    for record in records(range(1, 5)):
        opened.log_record(record)
    opened.close(succeeded=True)
    assert notices.warnings == []

    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    steps, config = [], {}
    for record in complete_wandb_run(run_file):
        if record.HasField("history"):
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            if "loss" in items:
                steps.append(int(items["_step"]))
        updates = record.run.config.update if record.HasField("run") else record.config.update
        config.update({item.key: item.value_json for item in updates})
    assert steps == [1, 2, 3, 4]
    assert json.loads(config["name"]) == "tracked" and json.loads(config["training"])["lr"] == 2e-5


def test_tensorboard_event_files_hold_every_step_and_the_spec(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    opened = open_trackers(spec({"type": "tensorboard"}), tmp_path, Notices())
    for record in records(range(1, 4)):
        opened.log_record(record)
    opened.close(succeeded=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert "spec/text_summary" in events.Tags()["tensors"]


def test_endpoints_and_credentials_cannot_come_from_the_spec() -> None:
    with pytest.raises(ValidationError, match="tracking_uri"):
        spec({"type": "mlflow", "experiment": "x", "tracking_uri": "http://evil"})
    with pytest.raises(ValidationError, match="api_key"):
        spec({"type": "wandb", "project": "x", "api_key": "k"})


def test_a_tracker_package_missing_on_the_worker_is_named_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrackerUnavailable, match="wandb requested but not installed"):
        check_trackers(spec({"type": "wandb", "project": "p"}, {"type": "tensorboard"}).integrations)


def test_a_job_logs_every_step_to_mlflow_and_tensorboard(
    mlflow_server: MlflowServer,
    tiny_job: Path,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lingudistill train's one runner: the trackers get the spec, every optimiser step and the end of the run."""
    import yaml

    from lingudistill.pipeline import run_job
    from lingudistill.spec import load_spec

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    body = yaml.safe_load(tiny_job.read_text())
    body["integrations"] = [{"type": "mlflow", "experiment": "tiny-jobs"}, {"type": "tensorboard"}]
    tiny_job.write_text(yaml.safe_dump(body))
    notices = Notices()
    output = tiny_job.parent / "out"
    run_job(load_spec(tiny_job), output, notify=notices)
    assert notices.warnings == []
    client = mlflow_client(mlflow_server.url)
    [run] = client.search_runs([client.get_experiment_by_name("tiny-jobs").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_kd")] == list(range(1, 7))
    assert run.info.status == "FINISHED" and run.data.params["method.kv_sharing"] == "prompt"
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))
