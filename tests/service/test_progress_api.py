"""Events (JSON and SSE), progress, metrics downsampling, checkpoints (local streamed and S3 presigned)."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import httpx
import pytest

from service.db import session_scope
from service.jobs import repository as jobs
from service.lifecycle import JobStatus
from service.models import Job


@pytest.fixture
def claimed(client, spec_body, sessions):
    """A job claimed by a worker: (job_id, attempt)."""
    job = client.post("/v1/jobs", json=spec_body()).json()
    with session_scope(sessions) as session:
        claim = jobs.claim_job(session, job["id"], "worker-1", lease_s=60)
    assert claim is not None
    return job["id"], claim.attempt


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


def test_progress_fields(client, claimed, sessions):
    job_id, attempt = claimed
    with session_scope(sessions) as session:
        assert jobs.transition(session, job_id, attempt, JobStatus.running)
        assert jobs.update_progress(
            session,
            job_id,
            attempt,
            step=25,
            total_steps=100,
            tokens_per_s=1234.5,
            step_time_s=2.0,
            latest_metrics={"loss": 1.5},
        )
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and job["queue_info"] is None
    assert job["progress"] == {
        "step": 25,
        "total_steps": 100,
        "percent": 25.0,
        "eta_s": 150.0,
        "tokens_per_s": 1234.5,
        "step_time_s": 2.0,
        "latest_metrics": {"loss": 1.5},
        "attempt": 1,
    }


def test_events_are_cursor_paginated(client, claimed, sessions):
    job_id, attempt = claimed
    with session_scope(sessions) as session:
        for i in range(5):
            jobs.append_event(session, job_id, attempt, "log", {"i": i})
    page = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 3}).json()
    assert [e["type"] for e in page["items"]] == ["status", "status", "log"]  # queued, validating, log 0
    assert page["has_more"] is True
    rest = client.get(f"/v1/jobs/{job_id}/events", params={"after": page["next_cursor"]}).json()
    assert [e["data"]["i"] for e in rest["items"]] == [1, 2, 3, 4]
    assert rest["has_more"] is False
    empty = client.get(f"/v1/jobs/{job_id}/events", params={"after": rest["next_cursor"]}).json()
    assert empty == {"items": [], "next_cursor": rest["next_cursor"], "has_more": False}


def test_sse_resumes_from_last_event_id_and_ends_after_the_final_state(client, claimed, sessions):
    job_id, attempt = claimed
    with session_scope(sessions) as session:
        jobs.transition(session, job_id, attempt, JobStatus.running)
        jobs.append_event(session, job_id, attempt, "checkpoint", {"step": 10})
        jobs.transition(session, job_id, attempt, JobStatus.succeeded)
    all_events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    resume_after = all_events[1]["id"]
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(resume_after)}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()  # the stream ends by itself: the job is final
    streamed = parse_sse(text)
    assert [e["id"] for e in streamed] == [e["id"] for e in all_events[2:]]
    assert [e["event"] for e in streamed] == ["status", "checkpoint", "status"]
    assert streamed[-1]["data"]["data"]["status"] == "succeeded"


def test_sse_streams_live_events_from_a_real_server(live_server, live_key, live_sessions, spec_body):
    """Against uvicorn: the stream delivers an event written after it started, then ends at the final state."""
    headers = {"Authorization": f"Bearer {live_key}"}
    body = spec_body(resources={"queue": "live"})
    job_id = httpx.post(f"{live_server}/v1/jobs", json=body, headers=headers).json()["id"]
    with session_scope(live_sessions) as session:
        attempt = jobs.claim_job(session, job_id, "w", 60).attempt

    def worker() -> None:
        time.sleep(0.3)
        with session_scope(live_sessions) as session:
            jobs.append_event(session, job_id, attempt, "evaluation", {"score": 0.9})
        with session_scope(live_sessions) as session:
            jobs.transition(session, job_id, attempt, JobStatus.failed, failure_reason="timeout")

    thread = threading.Thread(target=worker)
    thread.start()
    with httpx.stream(
        "GET", f"{live_server}/v1/jobs/{job_id}/events", timeout=10, headers={**headers, "Accept": "text/event-stream"}
    ) as response:
        text = "".join(response.iter_text())
    thread.join()
    assert [e["event"] for e in parse_sse(text)] == ["status", "status", "evaluation", "status"]


def test_metrics_filters_and_downsampling(client, claimed, sessions):
    job_id, attempt = claimed
    with session_scope(sessions) as session:
        rows = [(s, "loss", float(s)) for s in range(1, 101)] + [(s, "lr", 0.1) for s in range(1, 101)]
        assert jobs.record_metrics(session, job_id, attempt, rows) == 200
    full = client.get(f"/v1/jobs/{job_id}/metrics").json()["series"]
    assert [s["name"] for s in full] == ["loss", "lr"] and len(full[0]["points"]) == 100
    sampled = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": "loss", "max_points": 10}).json()
    (loss,) = sampled["series"]
    assert loss["downsampled"] and len(loss["points"]) == 10
    assert loss["points"][0] == {"step": 10, "value": 5.5}  # mean of steps 1..10 at the bucket's last step
    ranged = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": "loss", "step_min": 50, "step_max": 52})
    assert [p["step"] for p in ranged.json()["series"][0]["points"]] == [50, 51, 52]


def _save_checkpoint(storage, sessions, job_id, attempt, step, files: dict[str, bytes]) -> dict[str, str]:
    prefix = f"checkpoints/{job_id}/{step}"
    manifest = {}
    for path, data in files.items():
        stored = storage.put_stream(f"{prefix}/{path}", [data])
        manifest[path] = stored.sha256
    with session_scope(sessions) as session:
        assert jobs.record_checkpoint(
            session,
            job_id,
            attempt,
            step=step,
            storage_prefix=prefix,
            manifest=manifest,
            size_bytes=sum(map(len, files.values())),
            metrics={"loss": 1.0},
        )
    return manifest


def test_local_checkpoints_download_through_the_api_with_matching_sha256(client, claimed, sessions, storage):
    job_id, attempt = claimed
    files = {"model/model.safetensors": b"\x00" * 3_000_000, "model/config.json": b"{}"}
    manifest = _save_checkpoint(storage, sessions, job_id, attempt, 10, files)
    with session_scope(sessions) as session:  # incomplete checkpoints are not listed
        jobs.record_checkpoint(
            session, job_id, attempt, step=20, storage_prefix="x", manifest={}, size_bytes=0, complete=False
        )
    listing = client.get(f"/v1/jobs/{job_id}/checkpoints").json()
    (checkpoint,) = listing["items"]
    assert checkpoint["step"] == 10 and checkpoint["manifest"] == manifest and checkpoint["metrics"] == {"loss": 1.0}
    for file in checkpoint["files"]:
        assert file["url"].startswith(f"/v1/jobs/{job_id}/checkpoints/10/files/")
        response = client.get(file["url"])
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == file["sha256"] == response.headers["x-checksum-sha256"]


def test_s3_checkpoints_have_presigned_urls(make_client, new_key, spec_body, sessions, s3_storage):
    from fastapi.testclient import TestClient

    from service.app import create_app

    key = new_key()
    base = make_client(key)
    app = create_app(
        base.app.state.services.settings,
        sessions=sessions,
        storage=s3_storage,
        dispatcher=base.app.state.services.dispatcher,
    )
    client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    job_id = client.post("/v1/jobs", json=spec_body()).json()["id"]
    with session_scope(sessions) as session:
        attempt = jobs.claim_job(session, job_id, "w", 60).attempt
    manifest = _save_checkpoint(s3_storage, sessions, job_id, attempt, 5, {"model.bin": b"abc" * 1000})
    (checkpoint,) = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    (file,) = checkpoint["files"]
    assert file["url"].startswith("http://127.0.0.1") and "Signature" in file["url"]
    downloaded = httpx.get(file["url"]).content
    assert hashlib.sha256(downloaded).hexdigest() == manifest["model.bin"]
    assert s3_storage.sha256(f"checkpoints/{job_id}/5/model.bin") == manifest["model.bin"]
    client.close()


def test_report_route_serves_the_stored_report(client, claimed, sessions):
    job_id, attempt = claimed
    with session_scope(sessions) as session:
        assert jobs.set_report(session, job_id, attempt, {"verdict": "pass"})
        assert not jobs.set_report(session, job_id, attempt + 1, {"verdict": "stale"})
        assert session.get(Job, job_id).report == {"verdict": "pass"}
    assert client.get(f"/v1/jobs/{job_id}/report").json() == {"verdict": "pass"}
