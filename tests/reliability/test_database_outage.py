"""A database outage answers 503 problem+json with Retry-After, never a 500, and the API serves again as soon as the
server is back (a private PostgreSQL server, stopped and started; a real uvicorn server in front of it)."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from service.app import create_app
from service.db import make_engine, make_sessionmaker, session_scope
from service.dispatch import RecordingDispatcher
from service.keys.service import create_key
from service.settings import Settings
from service.storage import LocalStorage
from tests.reliability.conftest import PrivatePostgres, serving


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["code"] == "database_unavailable"
    assert "127.0.0.1" not in response.text  # the driver's message (hosts, ports) stays in the log


def test_a_database_outage_is_a_503_with_retry_after_and_the_api_recovers(
    private_postgres: PrivatePostgres, tmp_path: Path, spec_body: Callable[..., dict[str, Any]]
) -> None:
    url = private_postgres.create_database()
    settings = Settings(database_url=url, data_dir=tmp_path, webhook_delivery_enabled=False)
    sessions = make_sessionmaker(make_engine(url))
    with session_scope(sessions) as session:
        key = create_key(session, f"outage-{secrets.token_hex(3)}").key
    app = create_app(
        settings, sessions=sessions, storage=LocalStorage(tmp_path / "s"), dispatcher=RecordingDispatcher()
    )
    headers = {"Authorization": f"Bearer {key}"}
    with serving(app) as base, httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        assert api.get("/v1/jobs").status_code == 200  # the pool now holds connections that the stop will break

        private_postgres.stop("immediate")
        assert_unavailable(api.get("/v1/jobs"))
        assert_unavailable(api.post("/v1/jobs", json=spec_body("during-outage")))

        private_postgres.start()
        started = time.monotonic()
        while (response := api.get("/v1/jobs")).status_code != 200:
            assert_unavailable(response)
            time.sleep(0.1)
        print(f"serving again {time.monotonic() - started:.2f} s after the database was back")
        assert api.post("/v1/jobs", json=spec_body("after-outage")).status_code == 201
        assert [job["name"] for job in api.get("/v1/jobs").json()["items"]] == ["after-outage"]


def test_a_sqlite_database_locked_past_the_wait_is_a_503(
    sqlite_template: Path, tmp_path: Path, spec_body: Callable[..., dict[str, Any]]
) -> None:
    """The embedded default: another process holds the write lock longer than the request waits for it."""
    path = tmp_path / "locked.db"
    shutil.copy(sqlite_template, path)
    with session_scope(make_sessionmaker(make_engine(f"sqlite:///{path}"))) as session:
        key = create_key(session, "locked").key
    # the service's engine waits 30 s for a lock; this one 0.2 s, so the test does not wait half a minute
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2, "check_same_thread": False})
    settings = Settings(data_dir=tmp_path, webhook_delivery_enabled=False)
    app = create_app(settings, sessions=make_sessionmaker(engine), storage=LocalStorage(tmp_path / "storage"),
                     dispatcher=RecordingDispatcher())  # fmt: skip
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as api:
            assert_unavailable(api.post("/v1/jobs", json=spec_body("while-locked")))
            other.execute("ROLLBACK")
            assert api.post("/v1/jobs", json=spec_body("after-lock")).status_code == 201
    finally:
        other.close()
        engine.dispose()
