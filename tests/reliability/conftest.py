"""Reliability fixtures: private Postgres and S3-fault servers (never the shared ones), and the invariants every
fault test asserts afterwards. The stack, the tiny job and moto come from tests/worker and tests/service."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.db import session_scope, upgrade_database
from service.dispatch import RecordingDispatcher
from service.keys.service import create_key
from service.lifecycle import JobStatus
from service.models import Metric
from tests.service.conftest import (  # noqa: F401 - fixtures
    PG_ADMIN_URL,
    backend,
    client,
    dispatcher,
    free_port,
    live_key,
    live_server,
    live_sessions,
    make_client,
    new_key,
    pg_engine,
    pg_url,
    s3_endpoint,
    sessions,
    settings,
    spec_body,
    sqlite_template,
    storage,
)
from tests.worker.conftest import (  # noqa: F401 - fixtures
    Stack,
    bucket,
    private_queue,
    run_id,
    stack,
    tiny_world,
    wait_until,
)
from worker import transfers

FINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


# --- a private PostgreSQL server (restart faults must never touch the shared one) ------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        pytest.skip(f"{name} is not installed")
    return found[-1]


class PrivatePostgres:
    """initdb + pg_ctl in a temporary folder on a free loopback port; run as `postgres` when we are root."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ld-rel-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self._as = []

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=100"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        name = f"ld_rel_{secrets.token_hex(3)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"
        upgrade_database(url)
        return url

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.destroy()


# --- a TCP proxy in front of moto that can make storage vanish ------------------------------------------------


class FlakyProxy:
    """Forwards loopback TCP to `upstream`; `down()` resets every open connection and refuses new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_up = threading.Event()
        self.is_up.set()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.is_up.is_set():
                _reset(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self.is_up.clear()
        with self.lock:
            connections, self.open = self.open, set()
        for sock in connections:
            _reset(sock)

    def up(self) -> None:
        self.is_up.set()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.down()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()


@pytest.fixture
def flaky_s3(s3_endpoint: str) -> Iterator[FlakyProxy]:  # noqa: F811
    proxy = FlakyProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


# --- what must hold after every fault --------------------------------------------------------------------------


def api_client(stack: Stack) -> TestClient:  # noqa: F811
    """An API on the stack's database and storage, with an admin key (built before a fault, used after it)."""
    with session_scope(stack.sessions) as session:
        key = create_key(session, f"ops-{secrets.token_hex(3)}", admin=True).key
    app = create_app(stack.settings, sessions=stack.sessions, storage=stack.storage, dispatcher=RecordingDispatcher())
    api = TestClient(app)
    api.headers["Authorization"] = f"Bearer {key}"
    return api


def metric_rows(stack: Stack, job_id: str) -> list[tuple[int, str, int, float]]:  # noqa: F811
    with stack.sessions() as session:
        stmt = select(Metric.step, Metric.name, Metric.attempt, Metric.value).where(Metric.job_id == job_id)
        return [tuple(row) for row in session.execute(stmt.order_by(Metric.name, Metric.step))]  # type: ignore[misc]


def assert_invariants(stack: Stack, job_id: str, api: TestClient, tmp: Path, max_steps: int) -> None:  # noqa: F811
    """The job is final and succeeded, its loss series is 1..max_steps exactly once each, every complete checkpoint
    downloads with matching sha256, and the API answers for the job."""
    job = stack.job(job_id)
    assert job.status is JobStatus.succeeded, (job.status, job.failure_message)
    steps = [step for step, _ in stack.metrics(job_id)]
    assert steps == list(range(1, max_steps + 1)), steps  # unique and contiguous
    checkpoints = stack.checkpoints(job_id)
    assert checkpoints, "no complete checkpoint was recorded"
    for checkpoint in checkpoints:
        target = tmp / f"verify-{checkpoint.step}"
        transfers.download_checkpoint(stack.storage, checkpoint.storage_prefix, checkpoint.manifest, target)
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    listed = api.get(f"/v1/jobs/{job_id}/checkpoints")
    assert listed.status_code == 200, listed.text
    assert api.get("/readyz").status_code == 200


# --- a real uvicorn server in a thread (requests run concurrently on its thread pool) ------------------------


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL."""
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- a private Redis server (restarts lose every message: no persistence) -------------------------------------


class PrivateRedis:
    """`redis-server --save '' --appendonly no` on a free loopback port; `restart()` empties it, as an outage of a
    Redis without persistence does."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=subprocess.DEVNULL)
        wait_until(self._pings, 10, "the private redis")

    def _pings(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A migrated database of its own on the shared server, for tests whose sweeps must see only their own jobs."""
    name = f"ld_rel_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    upgrade_database(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
