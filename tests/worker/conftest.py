"""Worker fixtures with real processes: a fresh migrated Postgres database, Redis (a dedicated DB number and
queues unique to this session), moto's S3 server over HTTP, and `python -m worker` subprocesses.

The job is the engine's tiny LLaVA job (tests/engine/conftest.py): a few CPU steps, checkpoints every few.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lingudistill.spec import JobSpec
from service.auth import Principal
from service.db import make_engine, make_sessionmaker, session_scope
from service.dispatch import CeleryDispatcher, DispatchBuffer, Wakeup
from service.jobs import repository
from service.jobs.service import create_job, pause_job, resume_job
from service.keys.service import create_key
from service.models import Checkpoint, Job, JobEvent, JobStatus, Metric
from service.settings import Settings
from service.storage import S3Storage
from tests.engine.conftest import build_llava, tiny_spec, write_tiny_data
from tests.service.conftest import free_port, pg_url, s3_endpoint  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
# this suite's own Redis database on the shared server (set it apart when two runs share one server)
REDIS_DB = int(os.environ.get("LINGUDISTILL_TEST_REDIS_DB", "11"))
WORKER_READY_S = 60.0


# --- the tiny job -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-world")
    build_llava(folder, teacher_matches_student=False)
    write_tiny_data(folder)
    return folder


def job_spec(world: Path, queue: str, **training: Any) -> dict[str, Any]:
    """The tiny job with absolute paths; small steps (batch 1) so a job takes seconds on two cores."""
    spec = tiny_spec(world, **{"batch_size": 1, "grad_accum": 1, "max_steps": 6, "checkpoint_every": 2, **training})
    spec["student"], spec["teacher"] = str(world / "student"), str(world / "teacher")
    for source in spec["mixture"]:
        source["uri"] = str(world / source["uri"])
    spec["resources"] = {"queue": queue}
    return spec


def uninterrupted_losses(world: Path, folder: Path, **training: Any) -> dict[int, float]:
    """The loss at every step of the tiny job run without interruption, in this process: what a resumed job must
    reproduce."""
    import torch

    from lingudistill.pipeline import run_job
    from lingudistill.recipe import TrainingCallback

    torch.set_num_threads(1)
    losses: dict[int, float] = {}

    class Record(TrainingCallback):
        def on_step(self, record: dict[str, Any]) -> None:
            losses[record["step"]] = record["loss"]

    run_job(JobSpec.model_validate(job_spec(world, "ref", **training)), folder, callbacks=[Record()])
    return losses


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """`python -m worker` in its own process group, its log in a file."""

    env: dict[str, str]
    log: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        handle = self.log.open("ab")
        command = [sys.executable, "-m", "worker", "--loglevel=INFO", *self.args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        wait_until(lambda: "ready." in self.log.read_text(errors="replace"), WORKER_READY_S, "the worker to start")
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is gone for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
        return state != "Z"
    return True


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """Postgres + broker + S3 as the worker sees them, and helpers to submit and observe jobs."""

    settings: Settings
    env: dict[str, str]
    sessions: sessionmaker[Session]
    storage: S3Storage
    queue: str
    logs: Path
    principal: Principal | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, *args: str, queue: str | None = None, **env: str) -> WorkerProcess:
        environment = {**self.env, "LINGUDISTILL_WORKER_QUEUES": queue or self.queue, **env}
        log = self.logs / f"worker-{len(self.workers)}.log"
        process = WorkerProcess(environment, log, list(args)).start()
        self.workers.append(process)
        return process

    def submit(self, spec: dict[str, Any], max_attempts: int | None = None) -> str:
        overrides = {} if max_attempts is None else {"max_attempts": max_attempts}
        settings = self.settings.model_copy(update=overrides)
        buffer = DispatchBuffer()
        with session_scope(self.sessions) as session:
            job = create_job(session, self._principal(), JobSpec.model_validate(spec), settings, buffer)
        buffer.flush(CeleryDispatcher(self.settings))
        return job.id

    def resend(self, job_id: str) -> None:
        job = self.job(job_id)
        CeleryDispatcher(self.settings).send(Wakeup(job.id, job.queue, job.priority))

    def _principal(self) -> Principal:
        if self.principal is None:
            with session_scope(self.sessions) as session:
                key = create_key(session, f"worker-tests-{secrets.token_hex(3)}")
            self.principal = Principal(key.tenant_id, key.key_id)
        return self.principal

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def wait_status(self, job_id: str, statuses: set[JobStatus], timeout: float = 60.0) -> Job:
        wait_until(lambda: self.job(job_id).status in statuses, timeout, f"job {job_id} to reach {statuses}")
        return self.job(job_id)

    def events(self, job_id: str, type: str | None = None) -> list[JobEvent]:
        with self.sessions() as session:
            stmt = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            return [e for e in session.scalars(stmt) if type is None or e.type == type]

    def statuses(self, job_id: str) -> list[str]:
        return [e.data["status"] for e in self.events(job_id, "status")]

    def child_pids(self, job_id: str) -> list[int]:
        return [e.data["pid"] for e in self.events(job_id, "child_started")]

    def metrics(self, job_id: str, name: str = "loss") -> list[tuple[int, float]]:
        with self.sessions() as session:
            stmt = select(Metric.step, Metric.value).where(Metric.job_id == job_id, Metric.name == name)
            return [(s, v) for s, v in session.execute(stmt.order_by(Metric.step))]

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self.sessions() as session:
            return repository.list_complete_checkpoints(session, job_id)

    def cancel(self, job_id: str) -> None:
        with session_scope(self.sessions) as session:
            if not repository.cancel_queued(session, job_id):
                assert repository.request_cancel(session, job_id)

    def pause(self, job_id: str) -> Job:
        with session_scope(self.sessions) as session:
            return pause_job(session, self._principal(), job_id)

    def resume(self, job_id: str) -> None:
        buffer = DispatchBuffer()
        with session_scope(self.sessions) as session:
            resume_job(session, self._principal(), job_id, self.settings, buffer)
        buffer.flush(CeleryDispatcher(self.settings))


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def bucket(s3_endpoint: str) -> str:  # noqa: F811
    import boto3

    name = f"ld-worker-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def stack_env(db_url: str, broker_url: str, storage_url: str, s3: str | None, scratch: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # two shared cores: one thread per training child
        "LINGUDISTILL_DATABASE_URL": db_url,
        "LINGUDISTILL_BROKER_URL": broker_url,
        "LINGUDISTILL_STORAGE_URL": storage_url,
        "LINGUDISTILL_LEASE_S": "5",
        "LINGUDISTILL_MAX_ATTEMPTS": "3",
        "LINGUDISTILL_WORKER_SCRATCH_DIR": str(scratch),
        "LINGUDISTILL_WORKER_SWEEP_INTERVAL_S": "1",
        "LINGUDISTILL_WORKER_CANCEL_GRACE_S": "3",
        "LINGUDISTILL_WORKER_UNSENT_AFTER_S": "60",
        "LINGUDISTILL_WORKER_METRICS_FLUSH_S": "0.5",
    }
    if s3:
        env.update(LINGUDISTILL_S3_ENDPOINT_URL=s3, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


def make_stack(db_url: str, broker_url: str, bucket: str, s3: str, tmp: Path, queue: str) -> Stack:
    import boto3

    env = stack_env(db_url, broker_url, f"s3://{bucket}/prefix", s3, tmp / "scratch")
    settings = Settings(
        database_url=db_url, broker_url=broker_url, storage_url=f"s3://{bucket}/prefix", s3_endpoint_url=s3,
        data_dir=tmp / "data", allowed_local_roots=[Path("/")], max_attempts=3, lease_s=5,
    )  # fmt: skip
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    sessions = make_sessionmaker(make_engine(db_url))
    (tmp / "logs").mkdir(exist_ok=True)
    return Stack(settings, env, sessions, S3Storage(bucket, "prefix", client=client), queue, tmp / "logs")


@pytest.fixture(scope="session")
def stack(
    pg_url: str,  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    bucket: str,
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    result = make_stack(pg_url, broker, bucket, s3_endpoint, tmp, f"wt-{run_id}")
    yield result
    for worker in result.workers:
        worker.stop()
    client = redis.Redis(db=REDIS_DB)
    for key in client.scan_iter(match=f"*{result.queue}*"):  # this session's queues only
        client.delete(key)


@pytest.fixture(scope="session")
def shared_worker(stack: Stack) -> WorkerProcess:
    """One worker with two slots on the session's main queue, so a duplicate message meets a running job."""
    return stack.worker("--concurrency=2")


@pytest.fixture
def private_queue(stack: Stack) -> str:
    """A queue only the test's own workers read (for tests that kill their worker)."""
    return f"{stack.queue}-{secrets.token_hex(2)}"
