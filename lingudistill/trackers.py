"""Experiment trackers (MLflow, W&B, TensorBoard), fed by the job named in its spec's `integrations`.

Each tracker receives the resolved spec as parameters, every optimiser step's metrics (evaluation scores are the
`eval/<suite>` entries of those records), and at the end the report and its plots as artifacts.

Endpoints and credentials are the operator's, read from the training process's environment with each tool's own
variables (MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD; WANDB_API_KEY, WANDB_BASE_URL,
WANDB_MODE), never from the spec; links drop any user:password in a URL. Without MLFLOW_TRACKING_URI, MLflow
writes to OUTPUT/mlruns; TensorBoard always writes to OUTPUT/tensorboard.

A tracker that is down never fails or slows the training: each tracker is driven from its own thread through a
queue. When a call fails, the thread warns once (`notify`, which a supervised job turns into a warning event),
keeps the queued metrics and retries with backoff, so what was logged during an outage is sent once the tracker is
back. `close` waits a bounded time for the queue to drain and warns about whatever is left. Once a run exists,
`notify` gets its link (info), which the service shows on the job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from lingudistill.errors import UserInputError
from lingudistill.recipe import TrainingCallback
from lingudistill.spec import Integration, JobSpec, MlflowIntegration, TensorBoardIntegration, WandbIntegration

log = logging.getLogger(__name__)
Notify = Callable[[str, str, dict[str, Any]], None]  # (level "info" or "warning", message, data)
MAX_QUEUED = 1_000_000  # metric points kept through an outage; the oldest go first past it, with a warning
FIRST_RETRY_S, MAX_RETRY_S = 1.0, 30.0
METRICS_PER_CALL = 1000  # MLflow's log_batch limit


class Tracker(Protocol):
    """One run in one tracker. Called from its own thread only; any exception means "retry later"."""

    kind: str

    def start(self, spec: JobSpec, params: dict[str, str]) -> None: ...

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None: ...

    def log_artifacts(self, paths: list[Path]) -> None: ...

    def finish(self, succeeded: bool) -> None: ...

    def link(self) -> dict[str, str]: ...


@dataclass
class _Op:
    name: str  # start, metrics, artifacts, finish
    payload: Any = None


class TrackerThread:
    """Runs one tracker's calls in order on a daemon thread, retrying failed ones with backoff."""

    def __init__(self, tracker: Tracker, notify: Notify) -> None:
        self.tracker, self.notify = tracker, notify
        self.ops: deque[_Op] = deque()
        self.queued_points = 0
        self.lock = threading.Condition()
        self.failing: str | None = None  # the reason of the outage in progress, warned once
        self.thread = threading.Thread(target=self._run, name=f"tracker-{tracker.kind}", daemon=True)
        self.thread.start()

    def submit(self, op: _Op) -> None:
        with self.lock:
            if op.name == "metrics":
                self.queued_points += len(op.payload)
                self._drop_oldest_points()
            self.ops.append(op)
            self.lock.notify()

    def close(self, timeout_s: float) -> None:
        self.submit(_Op("stop"))
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self._warn(f"{self.tracker.kind}: {self.queued_points} metric point(s) and the end of the run were not "
                       f"sent within {timeout_s:.0f} s ({self.failing or 'still sending'})")  # fmt: skip

    def _warn(self, message: str) -> None:
        self.notify("warning", message, {})

    def _drop_oldest_points(self) -> None:
        dropped = 0
        while self.queued_points > MAX_QUEUED:
            index = next(i for i, op in enumerate(self.ops) if op.name == "metrics")
            dropped += len(self.ops[index].payload)
            self.queued_points -= len(self.ops[index].payload)
            del self.ops[index]
        if dropped:
            self._warn(f"{self.tracker.kind}: unreachable for long; the oldest {dropped} metric point(s) were dropped")

    def _next(self) -> _Op:
        """The next op; consecutive metric ops are merged into one call of up to METRICS_PER_CALL points."""
        with self.lock:
            while not self.ops:
                self.lock.wait()
            op = self.ops.popleft()
            if op.name != "metrics":
                return op
            points = list(op.payload)
            while (
                self.ops
                and self.ops[0].name == "metrics"
                and len(points) + len(self.ops[0].payload) <= METRICS_PER_CALL
            ):
                points += self.ops.popleft().payload
            return _Op("metrics", points)

    def _run(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            op = self._next()
            if op.name == "stop":
                return
            while not self._call(op):
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
            delay = FIRST_RETRY_S

    def _call(self, op: _Op) -> bool:
        try:
            if op.name == "start":
                self.tracker.start(*op.payload)
            elif op.name == "metrics":
                for first in range(0, len(op.payload), METRICS_PER_CALL):
                    self.tracker.log_metrics(op.payload[first : first + METRICS_PER_CALL])
            elif op.name == "artifacts":
                self.tracker.log_artifacts(op.payload)
            elif op.name == "finish":
                self.tracker.finish(op.payload)
        except Exception as exc:  # a tracker's failure is never the job's: report it once and retry
            self._failed(op, exc)
            return False
        if op.name == "metrics":
            with self.lock:
                self.queued_points -= len(op.payload)
        if op.name == "start":
            link = self.tracker.link()
            where = link.get("url") or link.get("run_id") or link.get("log_dir") or ""
            self.notify("info", f"{self.tracker.kind}: logging to {where}".rstrip(), {"tracker": link})
        if self.failing is not None:
            self.failing = None
            self._warn(f"{self.tracker.kind}: reachable again; the metrics kept meanwhile are being sent")
        return True

    def _failed(self, op: _Op, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        if self.failing is None:
            self.failing = reason
            self._warn(f"{self.tracker.kind}: {op.name} failed ({_redact(reason)}); training goes on, and the "
                       "metrics are kept and sent once it answers")  # fmt: skip
        log.debug("tracker %s: %s failed", self.tracker.kind, op.name, exc_info=exc)


class Trackers:
    """Every tracker of a job. Fed by `TrackerCallback` during training and by the pipeline at the end."""

    def __init__(self, trackers: Iterable[Tracker], notify: Notify) -> None:
        self.trackers = list(trackers)
        self.threads = [TrackerThread(t, notify) for t in self.trackers]

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, spec: JobSpec) -> None:
        self._each(_Op("start", (spec, flatten_params(spec.model_dump(mode="json")))))

    def log_record(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        points = [(step, k, float(v)) for k, v in record.items() if k != "step" and isinstance(v, int | float)]
        if points:
            self._each(_Op("metrics", points))

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        existing = [p for p in paths if p.is_file()]
        if existing:
            self._each(_Op("artifacts", existing))

    def close(self, succeeded: bool, timeout_s: float = 60.0) -> None:
        self._each(_Op("finish", succeeded))
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.close(max(0.1, deadline - time.monotonic()))

    def links(self) -> list[dict[str, str]]:
        return [t.link() for t in self.trackers]

    def _each(self, op: _Op) -> None:
        for thread in self.threads:
            thread.submit(op)


class TrackerCallback(TrainingCallback):
    """Every optimiser step's record (losses, learning rate, throughput, eval/<suite> scores) to the trackers."""

    def __init__(self, trackers: Trackers) -> None:
        self.trackers = trackers

    def on_step(self, record: dict[str, Any]) -> None:
        self.trackers.log_record(record)


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """{"training.lr": "1e-05", "mixture.0.uri": ...}: a tracker's parameters are flat strings."""
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: str(value)[:6000]}  # MLflow's limit on a parameter value
    flat: dict[str, str] = {}
    for key, inner in items:
        flat.update(flatten_params(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _redact(text: str) -> str:
    """Drop any user:password@ from URLs in a message (an operator's tracking URI may carry credentials)."""
    return " ".join(_public_url(word) if "://" in word else word for word in text.split(" "))


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class MlflowTracker:
    kind = "mlflow"

    def __init__(self, config: MlflowIntegration, output_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        # MLflow's client retries a dead server for minutes by default; our thread retries instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.config = config
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (output_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id: str | None = None
        self.run_id: str | None = None

    def start(self, spec: JobSpec, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(self.config.experiment)
            self.experiment_id = (
                experiment.experiment_id if experiment else self.client.create_experiment(self.config.experiment)
            )
            run = self.client.create_run(
                self.experiment_id, run_name=self.config.run_name or spec.name, tags={"lingudistill.job": spec.name}
            )
            self.run_id = run.info.run_id
        items = [Param(key[:250], value) for key, value in params.items()]
        for first in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=items[first : first + 100])

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(name), value, now, step) for step, name, value in points]
        self.client.log_batch(self._run(), metrics=metrics)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self._run(), str(path))

    def finish(self, succeeded: bool) -> None:
        self.client.set_terminated(self._run(), status="FINISHED" if succeeded else "FAILED")

    def link(self) -> dict[str, str]:
        link = {"type": self.kind, "experiment": self.config.experiment, "run_id": self.run_id or ""}
        if self.uri.startswith(("http://", "https://")) and self.run_id:
            base = _public_url(self.uri).rstrip("/")
            link["url"] = f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return link

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("the run has not started yet")
        return self.run_id


def _mlflow_key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . space / : only
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name)[:250]


class WandbTracker:
    kind = "wandb"

    def __init__(self, config: WandbIntegration, output_dir: Path) -> None:
        self.config, self.output_dir = config, output_dir
        self.run: Any = None

    def start(self, spec: JobSpec, params: dict[str, str]) -> None:
        import wandb

        if self.run is None:
            self.run = wandb.init(
                project=self.config.project,
                entity=self.config.entity,
                name=self.config.run_name or spec.name,
                config=spec.model_dump(mode="json"),
                dir=str(self.output_dir),
                tags=["lingudistill"],
                reinit="create_new",
            )

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for step, name, value in points:
            by_step.setdefault(step, {})[name] = value
        for step, values in sorted(by_step.items()):
            self._live().log(values, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self._live().save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, succeeded: bool) -> None:
        self._live().finish(exit_code=0 if succeeded else 1)

    def link(self) -> dict[str, str]:
        link = {"type": self.kind, "project": self.config.project, "run_id": getattr(self.run, "id", "") or ""}
        url = getattr(self.run, "url", None) if self.run is not None else None
        if url:
            link["url"] = url
        return link

    def _live(self) -> Any:
        if self.run is None:
            raise RuntimeError("the run has not started yet")
        return self.run


class TensorBoardTracker:
    kind = "tensorboard"

    def __init__(self, config: TensorBoardIntegration, output_dir: Path) -> None:
        self.log_dir = output_dir / "tensorboard"
        self.writer: Any = None

    def start(self, spec: JobSpec, params: dict[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = self.writer or SummaryWriter(log_dir=str(self.log_dir))
        table = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        self.writer.add_text("spec", "| parameter | value |\n|---|---|\n" + table, 0)

    def log_metrics(self, points: list[tuple[int, str, float]]) -> None:
        for step, name, value in points:
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.suffix == ".md":
                self.writer.add_text(path.stem, path.read_text(encoding="utf-8"), 0)

    def finish(self, succeeded: bool) -> None:
        self.writer.close()

    def link(self) -> dict[str, str]:
        return {"type": self.kind, "log_dir": str(self.log_dir)}


BUILDERS: dict[str, Callable[[Any, Path], Tracker]] = {
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
    "tensorboard": TensorBoardTracker,
}
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}


class TrackerUnavailable(UserInputError):
    """The spec asks for a tracker whose package this machine does not have."""


def check_trackers(integrations: list[Integration]) -> None:
    """Before any model loads: each requested tracker's package is installed."""
    import importlib.util

    missing = sorted({i.type for i in integrations if importlib.util.find_spec(PACKAGES[i.type]) is None})
    if missing:
        raise TrackerUnavailable(
            f"integrations: {', '.join(missing)} requested but not installed on this worker "
            "(pip install 'lingudistill[trackers]')"
        )


def open_trackers(spec: JobSpec, output_dir: Path, notify: Notify) -> Trackers:
    """The job's trackers, each started on its own thread (a tracker that cannot even be built is a warning)."""
    trackers: list[Tracker] = []
    for integration in spec.integrations:
        try:
            trackers.append(BUILDERS[integration.type](integration, output_dir))
        except Exception as exc:  # same policy as a tracker that is down: the training goes on
            reason = _redact(f"{type(exc).__name__}: {exc}")
            notify("warning", f"{integration.type}: cannot be set up ({reason}); not logged", {})
    opened = Trackers(trackers, notify)
    opened.start(spec)
    return opened


REPORT_ARTIFACTS = ("report.json", "report.md", "eval_items.json")


def log_notice(level: str, message: str, data: dict[str, Any]) -> None:
    """Notices of an unsupervised run (`lingudistill train`): to the log, warnings shown by default."""
    (log.warning if level == "warning" else log.info)(message)


@contextmanager
def job_trackers(spec: JobSpec, output_dir: Path, notify: Notify, *, enabled: bool = True) -> Iterator[Trackers]:
    """The trackers for the length of a job: at its end they get the report and its plots, and the run is closed
    as finished, or as failed when the job raised."""
    trackers = open_trackers(spec, output_dir, notify) if enabled and spec.integrations else Trackers([], notify)
    succeeded = False
    try:
        yield trackers
        succeeded = True
    finally:
        if trackers:
            plots = sorted(output_dir.glob("*.svg")) if output_dir.is_dir() else []
            trackers.log_artifacts([*(output_dir / name for name in REPORT_ARTIFACTS), *plots])
            trackers.close(succeeded)
