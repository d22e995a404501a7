"""Concurrent identical requests against a real uvicorn server on Postgres: exactly one job is created, and every
duplicate gets it."""

from __future__ import annotations

import threading

import httpx
from sqlalchemy import func, select

from service.models import Job


def test_concurrent_identical_requests_create_one_job(live_server, live_key, live_sessions, spec_body):
    body = spec_body("idem", resources={"queue": "live"})
    headers = {"Authorization": f"Bearer {live_key}", "Idempotency-Key": "concurrent-1"}
    barrier = threading.Barrier(12)
    responses: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=live_server, timeout=10) as client:
            barrier.wait()
            responses.append(client.post("/v1/jobs", json=body, headers=headers))

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a duplicate waits for the first request instead of being refused, then replays it
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    created = {r.json()["id"] for r in responses}
    assert len(created) == 1  # replays carry the same job
    assert sum("idempotent-replayed" in r.headers for r in responses) == 11
    with live_sessions() as session:
        count = session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(created)))
        assert count == 1
    # once done, the same request replays and a different body is refused
    with httpx.Client(base_url=live_server) as client:
        assert client.post("/v1/jobs", json=body, headers=headers).json()["id"] in created
        other = client.post("/v1/jobs", json={**body, "name": "other"}, headers=headers)
        assert other.status_code == 422
