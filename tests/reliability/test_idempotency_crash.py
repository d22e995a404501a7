"""After an API crash mid-request, a retry with the same Idempotency-Key is served at once (issue 14; it got 409 for
up to 300 s before). A separate process reserves the key through the service's own code, as a request does, and is
killed with SIGKILL while a retry of the same request waits for it; the retry then creates the job, exactly once.
On Postgres and on SQLite."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from lingudistill.spec import JobSpec
from service.app import create_app
from service.db import make_engine, make_sessionmaker, session_scope
from service.dispatch import RecordingDispatcher
from service.idempotency.service import request_hash
from service.keys.service import create_key
from service.models import IdempotencyKey, Job
from service.settings import Settings
from service.storage import LocalStorage
from tests.reliability.conftest import serving

ROOT = Path(__file__).resolve().parents[2]
# the crashing "API": reserves the key in an open transaction, says so, then dies when told to
CRASHING_REQUEST = """
import os, signal, sys
from service.db import make_engine, make_sessionmaker
from service.idempotency.service import reserve
session = make_sessionmaker(make_engine(sys.argv[1]))()
assert reserve(session, sys.argv[2], sys.argv[3], sys.argv[4], 24) is None
session.flush()
print("reserved", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    path = tmp_path / "crash.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


def test_a_retry_after_an_api_crash_mid_request_is_served_at_once(
    database_url: str, tmp_path: Path, spec_body: Callable[..., dict[str, Any]]
) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    with session_scope(sessions) as session:
        new = create_key(session, f"crash-{secrets.token_hex(3)}")
    body, key = spec_body("crash"), f"crash-{secrets.token_hex(4)}"
    payload_hash = request_hash(JobSpec.model_validate(body).model_dump(mode="json"))
    crashing = subprocess.Popen(
        [sys.executable, "-c", CRASHING_REQUEST, database_url, new.tenant_id, key, payload_hash],
        cwd=ROOT, env=os.environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert crashing.stdout is not None and crashing.stdout.readline().strip() == "reserved"

    settings = Settings(data_dir=tmp_path, webhook_delivery_enabled=False)
    app = create_app(
        settings, sessions=sessions, storage=LocalStorage(tmp_path / "s"), dispatcher=RecordingDispatcher()
    )
    answered: list[tuple[httpx.Response, float]] = []
    with serving(app) as base:

        def retry() -> None:
            headers = {"Authorization": f"Bearer {new.key}", "Idempotency-Key": key}
            response = httpx.post(f"{base}/v1/jobs", json=body, headers=headers, timeout=60)
            answered.append((response, time.monotonic()))

        thread = threading.Thread(target=retry)
        thread.start()
        thread.join(timeout=2)
        assert not answered, "the retry must wait for the request in flight, not be refused"
        assert crashing.stdin is not None
        crashing.stdin.write("crash\n")
        crashing.stdin.flush()
        crashing.wait(10)
        killed_at = time.monotonic()
        thread.join(timeout=60)
    response, at = answered[0]
    print(f"retry answered {at - killed_at:.2f} s after the crash")
    assert response.status_code == 201, response.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.id == response.json()["id"])) == 1
        assert session.scalar(select(IdempotencyKey.state).where(IdempotencyKey.key == key)) == "done"
