"""Service test fixtures: a fresh Postgres database per session (migrated with Alembic) with each test inside a
rolled-back transaction, a migrated SQLite file per test, moto's S3 server over HTTP, and API clients."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db import make_engine, session_scope, upgrade_database
from service.dispatch import RecordingDispatcher
from service.keys.service import create_key
from service.settings import Settings
from service.storage import LocalStorage, S3Storage, Storage

PG_ADMIN_URL = os.environ.get("LINGUDISTILL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"ld_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    upgrade_database(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "postgres")


@pytest.fixture
def sessions(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Postgres: every session joins one outer transaction rolled back after the test. SQLite: a migrated copy."""
    if backend == "postgres":
        engine: Engine = request.getfixturevalue("pg_engine")
        connection = engine.connect()
        outer = connection.begin()
        yield sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        outer.rollback()
        connection.close()
    else:
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = make_engine(f"sqlite:///{path}")
        yield sessionmaker(bind=engine, expire_on_commit=False)
        engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        allowed_local_roots=[tmp_path],
        rate_limit_per_s=10_000,
        rate_limit_burst=10_000,
        sse_poll_interval_s=0.05,
    )


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def make_client(
    settings: Settings, sessions: sessionmaker[Session], storage: Storage, dispatcher: RecordingDispatcher
) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(key: str | None = None, *, raise_server_exceptions: bool = True, **overrides: Any) -> TestClient:
        app_settings = settings.model_copy(update=overrides) if overrides else settings
        app = create_app(app_settings, sessions=sessions, storage=storage, dispatcher=dispatcher)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions)
        if key:
            client.headers["Authorization"] = f"Bearer {key}"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def new_key(sessions: sessionmaker[Session]) -> Callable[..., str]:
    def make(tenant: str | None = None, admin: bool = False) -> str:
        with session_scope(sessions) as session:
            return create_key(session, tenant or f"t-{secrets.token_hex(3)}", admin=admin).key

    return make


@pytest.fixture
def client(make_client: Callable[..., TestClient], new_key: Callable[..., str]) -> TestClient:
    return make_client(new_key("acme"))


@pytest.fixture
def spec_body(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def make(name: str = "repair-qwen2vl", **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "student": "s3://models/qwen2-vl-2b-adapted",
            "teacher": "hf://Qwen/Qwen2-1.5B-Instruct@main",
            "mixture": [
                {"name": "text", "uri": "s3://data/text.jsonl", "weight": 0.5, "distill": True},
                {"name": "vqa", "uri": "s3://data/vqa.jsonl", "weight": 0.5},
            ],
            "training": {"max_steps": 100},
            "metadata": {"team": "vlm"},
        }
        body.update(overrides)
        return body

    return make


# --- S3 through moto's server over HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint: str) -> S3Storage:
    import boto3

    bucket = f"ld-{secrets.token_hex(4)}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return S3Storage(bucket, "prefix", client=client)


# --- a real uvicorn server on a real (committed) Postgres database ---------------------------------------------


@pytest.fixture(scope="session")
def live_sessions(pg_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=pg_engine, expire_on_commit=False)


@pytest.fixture(scope="session")
def live_server(live_sessions: sessionmaker[Session], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import threading
    import time

    import uvicorn

    tmp = tmp_path_factory.mktemp("live")
    settings = Settings(data_dir=tmp, rate_limit_per_s=10_000, rate_limit_burst=10_000, sse_poll_interval_s=0.05)
    app = create_app(
        settings, sessions=live_sessions, storage=LocalStorage(tmp / "storage"), dispatcher=RecordingDispatcher()
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def live_key(live_sessions: sessionmaker[Session]) -> str:
    with session_scope(live_sessions) as session:
        return create_key(session, f"live-{secrets.token_hex(3)}").key
