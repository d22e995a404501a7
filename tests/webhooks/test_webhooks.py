"""Webhooks over real HTTP: registration per tenant, signed delivery to a receiver started here, retries with a
delivery log, and the SSRF policy at registration and at delivery time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.client import ApiError, DeliveryOut, LinguDistillClient
from service.db import make_engine, session_scope, upgrade_database
from service.jobs import repository as jobs_repository
from service.keys.service import create_key
from service.lifecycle import JobStatus
from service.models import Job, WebhookEndpoint
from service.settings import Settings
from service.webhooks.delivery import DeliveryLoop, Outgoing, post_signed
from service.webhooks.signing import InvalidSignature, generate_secret, sign_headers, verify
from service.webhooks.targets import TargetRefused, check_target
from tests.client.live import JobDriver, LiveServer, Recorded, Scripted, ScriptedServer, wait_until


def remote_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "student": "s3://models/student",
        "teacher": "s3://models/teacher",
        "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "distill": True}],
        "training": {"max_steps": 4},
    }


def expected_signature(secret: str, request: Recorded) -> str:
    """Standard Webhooks, computed independently of the service's signing module."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def settled_delivery(api: LinguDistillClient, webhook_id: str, count: int = 1) -> list[DeliveryOut]:
    def done() -> list[DeliveryOut] | None:
        items = api.list_deliveries(webhook_id).items
        return items if len(items) >= count and all(d.status != "pending" for d in items) else None

    return wait_until(done, timeout=20, what=f"{count} settled deliveries")


def test_delivery_is_signed_and_retried_after_a_failure(
    api: LinguDistillClient, driver: JobDriver, receiver: ScriptedServer
) -> None:
    receiver.script = [Scripted(500, b"receiver down"), Scripted(204)]
    hook = api.create_webhook(f"{receiver.url}/hook", ["job.succeeded"])
    job = api.create_job(remote_spec(f"hook-{secrets.token_hex(3)}"))
    attempt, _ = driver.start(job.id)
    driver.succeed(job.id, attempt, {"name": job.name, "passed": True, "gates": []})

    [delivery] = settled_delivery(api, hook.id)
    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert [a.status_code for a in delivery.attempt_log] == [500, 204]
    assert delivery.attempt_log[0].error == "HTTP 500: receiver down" and delivery.attempt_log[1].error is None

    first, second = receiver.requests
    for request in (first, second):
        assert request.headers["webhook-signature"] == expected_signature(hook.secret, request)
        assert abs(time.time() - int(request.headers["webhook-timestamp"])) < 60
        assert request.headers["webhook-id"] == delivery.id  # the same id on every attempt: receivers dedupe on it
    body = json.loads(second.body)
    assert body["type"] == "job.succeeded"
    assert body["data"]["job_id"] == job.id and body["data"]["status"] == "succeeded"
    assert body["data"]["report_passed"] is True


def test_event_types_follow_each_endpoint_subscription(
    api: LinguDistillClient, driver: JobDriver, receiver: ScriptedServer
) -> None:
    every = api.create_webhook(f"{receiver.url}/every")
    only_failed = api.create_webhook(f"{receiver.url}/failed", ["job.failed"])
    failing = api.create_job(remote_spec(f"fails-{secrets.token_hex(3)}"))
    attempt, _ = driver.start(failing.id)
    driver.checkpoint(failing.id, attempt, 2, f"jobs/{failing.id}/checkpoints/step-000000002", {})
    driver.fail(failing.id, attempt)
    cancelled = api.create_job(remote_spec(f"cancel-{secrets.token_hex(3)}"))
    api.cancel_job(cancelled.id)

    delivered = settled_delivery(api, every.id, count=3)
    assert sorted(d.event_type for d in delivered) == ["checkpoint.created", "job.cancelled", "job.failed"]
    [failed] = settled_delivery(api, only_failed.id)
    assert failed.event_type == "job.failed" and failed.payload["data"]["failure_reason"] == "bad_input"
    checkpoint = next(d for d in delivered if d.event_type == "checkpoint.created")
    assert checkpoint.payload["data"]["step"] == 2


def test_both_arms_of_a_job_with_a_control_are_announced_each_naming_the_other(
    api: LinguDistillClient, receiver: ScriptedServer
) -> None:
    hook = api.create_webhook(f"{receiver.url}/pair", ["job.cancelled"])
    spec = remote_spec(f"pair-{secrets.token_hex(3)}")
    spec["evaluation"] = {"language": [{"name": "arc", "uri": "s3://eval/arc.jsonl"}], "control": True}
    method = api.create_job(spec)
    api.cancel_job(method.id)  # cancels its control arm too

    delivered = {d.job_id: d.payload["data"] for d in settled_delivery(api, hook.id, count=2)}
    assert delivered[method.id]["control_job_id"] == method.control_job_id
    assert delivered[method.control_job_id]["control_of"] == method.id


def test_tenants_see_and_receive_only_their_own(
    server: LiveServer,
    api: LinguDistillClient,
    new_key: Callable[[], str],
    sessions: sessionmaker[Session],
    receiver: ScriptedServer,
) -> None:
    mine = api.create_webhook(f"{receiver.url}/mine")
    with LinguDistillClient(server.url, new_key()) as other:
        for call in (other.get_webhook, other.delete_webhook, other.list_deliveries):
            with pytest.raises(ApiError) as refused:
                call(mine.id)
            assert refused.value.status == 404 and refused.value.code == "webhook_not_found"
        assert other.list_webhooks().items == []
        theirs = other.create_webhook(f"{receiver.url}/theirs", ["job.cancelled"])
        job = other.create_job(remote_spec(f"other-{secrets.token_hex(3)}"))
        other.cancel_job(job.id)
        settled_delivery(other, theirs.id)  # the loop has passed that event...

    assert api.list_deliveries(mine.id).items == []  # ...and gave it to the other tenant only
    assert [h.id for h in api.list_webhooks().items] == [mine.id]
    with session_scope(sessions) as session:
        admin_key = create_key(session, f"ops-{secrets.token_hex(3)}", admin=True).key
    with LinguDistillClient(server.url, admin_key) as admin:  # an admin key sees every tenant's endpoints
        assert admin.get_webhook(mine.id).id == mine.id


def test_the_secret_is_shown_only_at_creation(server: LiveServer, api: LinguDistillClient) -> None:
    hook = api.create_webhook("https://93.184.215.14/hook")
    assert hook.secret.startswith("whsec_") and len(base64.b64decode(hook.secret[6:])) == 24
    headers = {"Authorization": f"Bearer {api.api_key}"}
    for path in (f"/v1/webhooks/{hook.id}", "/v1/webhooks"):
        assert "whsec_" not in httpx.get(server.url + path, headers=headers).text


def test_redirects_are_not_followed(api: LinguDistillClient, driver: JobDriver, receiver: ScriptedServer) -> None:
    elsewhere = ScriptedServer()
    receiver.script = [Scripted(302, b"", {"Location": f"{elsewhere.url}/stolen"})]
    hook = api.create_webhook(f"{receiver.url}/redirects", ["job.cancelled"])
    job = api.create_job(remote_spec(f"redirect-{secrets.token_hex(3)}"))
    api.cancel_job(job.id)

    [delivery] = settled_delivery(api, hook.id)
    elsewhere.close()
    assert delivery.status == "failed" and delivery.attempts == 3  # webhook_max_attempts, then it gives up
    assert all("not followed" in (a.error or "") for a in delivery.attempt_log)
    assert elsewhere.requests == []


# --- SSRF ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
        "http://2130706433/hook",  # 127.0.0.1 as a decimal number
        "http://0x7f.1/hook",  # ... and in hex short form
        "http://localhost:9000/hook",  # a DNS name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.1.2.3/hook",  # private
        "http://[::1]/hook",  # IPv6 loopback
        "file:///etc/passwd",  # not http(s)
    ],
)
def test_private_targets_are_refused_at_registration(strict_server: LiveServer, new_key: Callable[[], str], url: str):
    with LinguDistillClient(strict_server.url, new_key()) as api:
        with pytest.raises(ApiError) as refused:
            api.create_webhook(url)
        assert refused.value.status == 422 and refused.value.code == "webhook_url_not_allowed"
        assert refused.value.errors[0].loc == ["body", "url"]
        assert api.list_webhooks().items == []


def test_a_public_target_is_accepted_by_default(strict_server: LiveServer, new_key: Callable[[], str]) -> None:
    with LinguDistillClient(strict_server.url, new_key()) as api:
        assert api.create_webhook("https://93.184.215.14/hook").url == "https://93.184.215.14/hook"


def test_the_target_is_checked_again_at_delivery(receiver: ScriptedServer) -> None:
    outgoing = Outgoing("msg_x", 1, f"{receiver.url}/hook", generate_secret(), {"type": "job.failed"})
    with httpx.Client(follow_redirects=False) as http:
        result = post_signed(http, outgoing, allow_private=False)
    assert not result.ok and result.error is not None and result.error.startswith("target refused")
    assert receiver.requests == []


def test_dns_rebinding_is_caught_by_the_fresh_resolution() -> None:
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    target = check_target("https://hooks.example.com/x", False, resolver=lambda host, port: next(answers))
    assert target.connect_url == "https://93.184.215.14:443/x" and target.sni_hostname == "hooks.example.com"
    with pytest.raises(TargetRefused, match="non-public"):
        check_target("https://hooks.example.com/x", False, resolver=lambda host, port: next(answers))


def test_signatures_verify_and_reject_tampering_and_replays() -> None:
    secret, body = generate_secret(), b'{"type":"job.succeeded"}'
    headers = sign_headers(secret, "msg_1", body)
    verify(secret, headers, body)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, body + b" ")
    with pytest.raises(InvalidSignature):
        verify(secret, sign_headers(secret, "msg_1", body, timestamp=int(time.time()) - 3600), body)


# --- the same loop on SQLite (the embedded default) -------------------------------------------------------------


def test_delivery_loop_runs_on_sqlite(tmp_path: Path, receiver: ScriptedServer) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with session_scope(sessions) as session:
        tenant_id = create_key(session, "embedded").tenant_id
        session.add(
            WebhookEndpoint(
                id="wh_1", tenant_id=tenant_id, url=receiver.url, events=["job.failed"], secret=generate_secret()
            )
        )
        session.add(Job(id="job_1", tenant_id=tenant_id, name="j", spec={}, status=JobStatus.failed, attempt=1))
        session.flush()
        jobs_repository.append_event(session, "job_1", 1, "status", {"status": "running"})
        jobs_repository.append_event(session, "job_1", 1, "status", {"status": "failed"})
    loop = DeliveryLoop(sessions, Settings(data_dir=tmp_path, allow_private_network=True, webhook_event_lag_s=0))
    try:
        assert loop.run_once() == 1
        assert loop.run_once() == 0  # delivered once; the cursor moved on
    finally:
        loop.close()
        engine.dispose()
    [request] = receiver.requests
    assert json.loads(request.body)["type"] == "job.failed"
