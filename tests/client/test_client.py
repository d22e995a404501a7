"""The typed client over real HTTP: every route against the live server, the retry policy against a scripted
server, and the event stream surviving a dropped connection."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import pytest

from service.client import (
    ApiConnectionError,
    ApiError,
    JobOut,
    JobStatus,
    LinguDistillClient,
    Report,
    RetryPolicy,
)
from tests.client.live import CuttingProxy, JobDriver, LiveServer, Scripted, ScriptedServer, wait_until
from tests.service.conftest import free_port


def remote_spec(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "student": "s3://models/student",
        "teacher": "s3://models/teacher",
        "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "distill": True}],
        "training": {"max_steps": 4},
        **extra,
    }


# --- every route ------------------------------------------------------------------------------------------------


def test_every_route_returns_typed_models(api: LinguDistillClient, driver: JobDriver, tmp_path: Path) -> None:
    assert api.health()["status"] == "ok"

    job = api.create_job(remote_spec(f"routes-{secrets.token_hex(3)}"))
    assert isinstance(job, JobOut) and job.status is JobStatus.queued and job.spec.training.seed is not None
    assert api.get_job(job.id).id == job.id
    assert [j.id for j in api.list_jobs(name=job.name).items] == [job.id]
    assert api.list_jobs(name=job.name).items[0].spec is None
    assert api.list_jobs(name=job.name, view="full").items[0].spec == job.spec
    assert job.id in [j.id for j in api.iter_jobs(status=["queued"])]
    assert api.list_events(job.id).items[0].data["status"] == "queued"

    attempt, _ = driver.start(job.id)
    driver.step(job.id, attempt, 1, 4, loss=1.5)
    assert api.get_metrics(job.id, ["loss"]).series[0].points[0].value == 1.5
    assert api.list_checkpoints(job.id).items == []
    with pytest.raises(ApiError) as not_ready:
        api.get_report(job.id)
    assert not_ready.value.status == 404 and not_ready.value.code == "report_not_ready"

    assert api.cancel_job(job.id).status is JobStatus.cancelling
    driver.move(job.id, attempt, JobStatus.cancelled)
    assert api.retry_job(job.id).status is JobStatus.queued

    data = tmp_path / "records.jsonl"
    data.write_text('{"prompt": "hi", "response": "hello"}\n')
    dataset = api.upload_dataset(data)
    assert dataset.status == "ready" and dataset.record_count == 1
    assert api.get_dataset(dataset.id) == dataset
    assert api.find_dataset(dataset.sha256) == dataset
    assert [d.id for d in api.list_datasets().items] == [dataset.id]

    hook = api.create_webhook("https://93.184.215.14/hooks/ci", ["job.succeeded"], description="ci")
    assert hook.secret.startswith("whsec_")
    assert api.get_webhook(hook.id).events == ["job.succeeded"]
    assert [h.id for h in api.list_webhooks().items] == [hook.id]
    assert api.list_deliveries(hook.id).items == []
    api.delete_webhook(hook.id)
    with pytest.raises(ApiError) as gone:
        api.get_webhook(hook.id)
    assert gone.value.code == "webhook_not_found"


def test_problem_details_are_typed(api: LinguDistillClient) -> None:
    with pytest.raises(ApiError) as invalid:
        api.create_job(remote_spec("bad", training={"max_steps": -1}))
    error = invalid.value
    assert error.status == 422 and error.code == "validation_error"
    assert error.problem is not None and error.problem.type.endswith("validation_error")
    assert any(e.loc[-1] == "max_steps" for e in error.errors)


def test_wait_reports_progress_until_final(api: LinguDistillClient, driver: JobDriver) -> None:
    job = api.create_job(remote_spec(f"wait-{secrets.token_hex(3)}"))
    seen: list[JobOut] = []

    def finish() -> None:
        attempt, _ = driver.start(job.id)
        driver.step(job.id, attempt, 2, 4, loss=1.0)
        driver.succeed(job.id, attempt, None)

    thread = threading.Thread(target=finish)
    thread.start()
    final = api.wait(job.id, on_progress=seen.append, poll_interval_s=0.05, timeout_s=20)
    thread.join()
    assert final.status is JobStatus.succeeded
    assert seen[-1].status is JobStatus.succeeded and len(seen) >= 2


# --- the event stream -------------------------------------------------------------------------------------------


def test_event_stream_reconnects_with_last_event_id_after_a_drop(
    server: LiveServer, api_key: str, driver: JobDriver
) -> None:
    proxy = CuttingProxy(server.port)
    api = LinguDistillClient(proxy.url, api_key, retry=RetryPolicy(backoff_s=0.01, max_backoff_s=0.05))
    job = api.create_job(remote_spec(f"sse-{secrets.token_hex(3)}"))
    attempt, _ = driver.start(job.id)
    received: list[int] = []
    cut_done = threading.Event()

    def produce() -> None:
        wait_until(lambda: len(received) >= 3, what="the first events")  # queued, validating, running
        proxy.cut()
        cut_done.set()
        for i in range(3):
            driver.event(job.id, attempt, "log", {"line": i})
        driver.succeed(job.id, attempt, None)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for event in api.stream_events(job.id):
            received.append(event.id)
    finally:
        producer.join()
        proxy.close()
        api.close()

    assert cut_done.is_set()
    logged = [e.id for e in LinguDistillClient(server.url, api_key).iter_events(job.id)]
    assert received == logged  # every event exactly once, in order, across the drop
    assert len([h for h in proxy.heads if "/events" in h]) >= 2
    resumed = [h for h in proxy.heads if "last-event-id" in h.lower()]
    assert resumed and f"last-event-id: {received[2]}" in resumed[0].lower()


# --- the retry policy, against a scripted server ----------------------------------------------------------------


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


JOB_JSON: dict[str, Any] = {}


@pytest.fixture
def job_json(api: LinguDistillClient) -> dict[str, Any]:
    """A real JobOut body, for the scripted server to answer with."""
    if not JOB_JSON:
        JOB_JSON.update(api.create_job(remote_spec("scripted")).model_dump(mode="json"))
    return JOB_JSON


def scripted_client(server: ScriptedServer | str, sleeps: Sleeps, attempts: int = 4) -> LinguDistillClient:
    url = server if isinstance(server, str) else server.url
    return LinguDistillClient(url, "ldk_test", retry=RetryPolicy(max_attempts=attempts), sleep=sleeps)


def test_429_honours_retry_after_and_the_idempotency_key_is_reused(job_json: dict[str, Any]) -> None:
    script = [Scripted(429, {"code": "rate_limited"}, {"Retry-After": "7"}), Scripted(503, {}), Scripted(201, job_json)]
    server, sleeps = ScriptedServer(script), Sleeps()
    with scripted_client(server, sleeps) as api:
        job = api.create_job(remote_spec("scripted"))
        api.create_job(remote_spec("scripted"))  # a second logical call
    server.close()

    assert job.id == job_json["id"]
    assert sleeps[0] == 7.0  # Retry-After, not the backoff
    assert 0 < sleeps[1] <= RetryPolicy().backoff_s * 2
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] != keys[3]


def test_a_submission_whose_twin_is_in_flight_waits_for_it(job_json: dict[str, Any]) -> None:
    in_flight = {"type": "t", "title": "In progress", "status": 409, "code": "idempotency_in_flight"}
    other_conflict = {**in_flight, "code": "invalid_transition"}
    server, sleeps = ScriptedServer([Scripted(409, in_flight), Scripted(201, job_json)]), Sleeps()
    with scripted_client(server, sleeps) as api:
        job = api.create_job(remote_spec("twin"), idempotency_key="ci-github-1")
    server.close()
    assert job.id == job_json["id"] and len(server.requests) == 2 and len(sleeps) == 1

    server, sleeps = ScriptedServer([Scripted(409, other_conflict)]), Sleeps()
    with scripted_client(server, sleeps) as api, pytest.raises(ApiError):
        api.cancel_job("job_x")  # any other conflict is an answer, not a reason to retry
    server.close()
    assert len(server.requests) == 1 and sleeps == []


def test_400_and_500_are_not_retried() -> None:
    problem = {"type": "t", "title": "Bad", "status": 400, "code": "bad_request", "detail": "nope"}
    for status in (400, 500):
        server, sleeps = ScriptedServer([Scripted(status, {**problem, "status": status})]), Sleeps()
        with scripted_client(server, sleeps) as api, pytest.raises(ApiError) as raised:
            api.get_job("job_x")
        server.close()
        assert raised.value.status == status and raised.value.code == "bad_request" and raised.value.detail == "nope"
        assert len(server.requests) == 1 and sleeps == []


def test_503_is_retried_until_attempts_run_out() -> None:
    server, sleeps = ScriptedServer([Scripted(503, {"code": "not_ready"})]), Sleeps()
    with scripted_client(server, sleeps, attempts=3) as api, pytest.raises(ApiError) as raised:
        api.health()
    server.close()
    assert raised.value.status == 503 and len(server.requests) == 3 and len(sleeps) == 2
    assert sleeps[1] > sleeps[0] * 0.9 or sleeps[1] >= RetryPolicy().backoff_s  # exponential growth (with jitter)


def test_connection_refused_is_retried_until_the_server_is_up(job_json: dict[str, Any]) -> None:
    port = free_port()
    started: list[ScriptedServer] = []

    def sleep_then_start(seconds: float) -> None:
        if not started:  # the server comes up during the client's first backoff
            started.append(ScriptedServer([Scripted(201, job_json)], port=port))

    api = LinguDistillClient(f"http://127.0.0.1:{port}", "ldk_test", sleep=sleep_then_start)
    try:
        job = api.create_job(remote_spec("scripted"))
    finally:
        api.close()
        for server in started:
            server.close()
    assert job.id == job_json["id"] and len(started[0].requests) == 1


def test_connection_refused_gives_up_with_a_connection_error() -> None:
    sleeps = Sleeps()
    api = scripted_client(f"http://127.0.0.1:{free_port()}", sleeps, attempts=3)
    with api, pytest.raises(ApiConnectionError):
        api.health()
    assert len(sleeps) == 2


def test_downloads_check_against_the_manifest_not_trust_the_server(tmp_path: Path) -> None:
    content = b"weights"
    listing = {
        "job_id": "job_x",
        "items": [
            {
                "step": 2,
                "attempt": 1,
                "size_bytes": 7,
                "metrics": {},
                "manifest": {"model.safetensors": "0" * 64},
                "files": [{"path": "model.safetensors", "sha256": "0" * 64, "url": "/files/model"}],
                "created_at": "2026-01-01T00:00:00Z",
            }
        ],
    }
    server = ScriptedServer([Scripted(200, listing), Scripted(200, content)])
    with scripted_client(server, Sleeps()) as api, pytest.raises(Exception, match="sha256"):
        api.download_checkpoint("job_x", tmp_path / "out")
    server.close()
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_report_model_reads_the_verdict() -> None:
    report = Report.model_validate(
        {"name": "x", "passed": False, "gates": [{"name": "min_recovery", "passed": False, "value": 0.1}], "extra": 1}
    )
    assert not report.passed and report.gates[0].name == "min_recovery" and report.raw["extra"] == 1
