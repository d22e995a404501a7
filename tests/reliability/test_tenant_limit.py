"""A tenant's active-job limit holds under concurrent creates (issue 14): 16 parallel POSTs against a live server
with a limit of 8 dispatch exactly 8 and hold the other 8, on Postgres (a row lock on the tenant) and on SQLite
(the lock is the database's single writer, taken before the count)."""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db import make_engine, session_scope
from service.dispatch import RecordingDispatcher
from service.keys.service import create_key
from service.models import Job
from service.settings import Settings
from service.storage import LocalStorage
from tests.reliability.conftest import serving

PARALLEL, LIMIT = 16, 8


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> sessionmaker[Session]:
    """Committed sessions: the requests run in separate transactions, as in production."""
    if request.param == "postgres":
        engine: Engine = request.getfixturevalue("pg_engine")
    else:
        path = tmp_path / "limit.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = make_engine(f"sqlite:///{path}")
        request.addfinalizer(engine.dispose)
    return sessionmaker(bind=engine, expire_on_commit=False)


def post_at_once(url: str, key: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response] = []

    def send(body: dict[str, Any]) -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            barrier.wait()
            responses.append(client.post("/v1/jobs", json=body))

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_sixteen_concurrent_creates_with_a_limit_of_eight_dispatch_exactly_eight(
    database: sessionmaker[Session], tmp_path: Path, spec_body: Callable[..., dict[str, Any]]
) -> None:
    settings = Settings(data_dir=tmp_path, max_active_jobs_per_tenant=LIMIT, rate_limit_burst=10_000)
    dispatcher = RecordingDispatcher()
    app = create_app(settings, sessions=database, storage=LocalStorage(tmp_path / "storage"), dispatcher=dispatcher)
    tenant = f"limit-{secrets.token_hex(3)}"
    with session_scope(database) as session:
        key = create_key(session, tenant).key
    with serving(app) as url:
        responses = post_at_once(url, key, [spec_body(f"job-{i}") for i in range(PARALLEL)])
    assert sorted(r.status_code for r in responses) == [201] * PARALLEL, [r.text for r in responses]
    created = {r.json()["id"] for r in responses}
    with database() as session:
        rows = session.execute(select(Job.id, Job.held_reason).where(Job.id.in_(created))).all()
    dispatched = {job_id for job_id, held in rows if held is None}
    assert len(dispatched) == LIMIT and len(rows) == PARALLEL
    assert sorted(w.job_id for w in dispatcher.sent) == sorted(dispatched)
