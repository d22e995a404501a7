"""The event stream on the wire (uvicorn, committed Postgres) read by httpx-sse, a strict client: keep-alives
make it dispatch nothing, a revoked key ends an open stream, and events say what happened in words (issue 15)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from httpx_sse import connect_sse

from service.app import create_app
from service.db import session_scope
from service.dispatch import RecordingDispatcher
from service.jobs import repository as jobs
from service.keys import service as keys
from service.lifecycle import JobStatus
from service.settings import Settings
from service.storage import LocalStorage
from tests.service.conftest import free_port
from tests.service.live import end_live_jobs_fixture  # noqa: F401 (the end_live_jobs fixture)


@pytest.fixture(scope="module")
def sse_server(live_sessions, tmp_path_factory) -> Iterator[str]:
    """A server whose idle streams send a keep-alive every 0.1 s."""
    tmp = tmp_path_factory.mktemp("sse")
    settings = Settings(
        data_dir=tmp, rate_limit_per_s=10_000, rate_limit_burst=10_000, sse_poll_interval_s=0.05, sse_keepalive_s=0.1
    )
    app = create_app(
        settings, sessions=live_sessions, storage=LocalStorage(tmp / "storage"), dispatcher=RecordingDispatcher()
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def key(live_sessions):
    with session_scope(live_sessions) as session:
        return keys.create_key(session, f"sse-{secrets.token_hex(3)}")


@pytest.fixture
def submit(sse_server, spec_body, end_live_jobs):
    def post(token: str) -> str:
        body = spec_body("sse", resources={"queue": "sse"})
        job_id = httpx.post(f"{sse_server}/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"}).json()[
            "id"
        ]
        end_live_jobs.append(job_id)
        return job_id

    return post


def test_keepalives_dispatch_no_event_and_revoking_the_key_ends_the_stream(sse_server, key, live_sessions, submit):
    job_id = submit(key.key)

    def revoke_later() -> None:
        time.sleep(0.6)  # several keep-alives go out first
        with session_scope(live_sessions) as session:
            keys.revoke_key(session, keys.load_key(session, key.key_id))

    threading.Thread(target=revoke_later).start()
    headers = {"Authorization": f"Bearer {key.key}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        with connect_sse(client, "GET", f"{sse_server}/v1/jobs/{job_id}/events") as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = list(source.iter_sse())  # returns only because the revoked key ends the stream
        again = client.get(f"{sse_server}/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
        assert again.status_code == 401  # and the key cannot open a new one
    assert [(e.event, e.json()["data"]["status"]) for e in events] == [("status", "queued")]
    assert all(e.data for e in events)  # a keep-alive ending in a blank line would add an empty event here


def test_only_events_end_in_a_blank_line_and_they_say_what_happened(sse_server, key, live_sessions, submit):
    job_id = submit(key.key)
    with session_scope(live_sessions) as session:
        attempt = jobs.claim_job(session, job_id, "w", 60).attempt

    def finish_later() -> None:
        time.sleep(0.5)
        with session_scope(live_sessions) as session:
            jobs.transition(session, job_id, attempt, JobStatus.failed, failure_reason="bad_input",
                            failure_message="DataError: /srv/worker/tmp/job_1/train.jsonl:3: no messages")  # fmt: skip

    threading.Thread(target=finish_later).start()
    headers = {"Authorization": f"Bearer {key.key}", "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{sse_server}/v1/jobs/{job_id}/events", headers=headers, timeout=10) as response:
        text = "".join(response.iter_text())
    blocks = text.split("\n\n")
    assert blocks[-1] == ""  # the stream ends after a complete event
    events = blocks[:-1]
    assert len(events) == 3  # queued, validating, failed: no block of comments or fields alone
    assert all("\ndata: " in block for block in events)
    assert ": keep-alive\n" in text
    last = events[-1]
    assert '"level":"error"' in last and "/srv/worker" not in text
    assert "Failed. bad_input: DataError: .../train.jsonl:3: no messages" in last


@pytest.mark.parametrize("value", [str(2**63).encode(), b"\xb2", b"9" * 5000])
def test_a_bad_last_event_id_is_a_problem_before_any_stream_byte(sse_server, key, submit, value):
    """Before, 2^63 got a 200 and then a cut stream, so a browser reconnected forever."""
    job_id = submit(key.key)
    headers = {"Authorization": f"Bearer {key.key}", "Accept": "text/event-stream", "Last-Event-ID": value}
    response = httpx.get(f"{sse_server}/v1/jobs/{job_id}/events", headers=headers, timeout=10)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["header", "last-event-id"]
