"""The delivery loop: job events -> deliveries -> signed POSTs, retried with exponential backoff.

It follows the job_events table past a cursor, so whoever changes a job (worker, API, sweeper) needs no webhook
code. Every API process runs it (a thread started by the app's lifespan); several processes cooperate safely:
the cursor row is locked (SKIP LOCKED) by the one fanning out, a delivery is unique per (endpoint, event), and a
delivery is claimed by a conditional UPDATE before it is sent. Delivery is at least once: receivers deduplicate
on the `webhook-id` header, which is the same on every attempt.

Event ids come from a sequence and may commit out of order, so the cursor only moves past events older than
`webhook_event_lag_s`; younger ones are re-read on the next pass and the unique constraint drops repeats.

Once an hour per process the loop also deletes deliveries (and their attempts) settled more than
`webhook_delivery_retention_days` ago, so the delivery log does not grow forever.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.models import WebhookAttempt, WebhookEndpoint, new_id, utcnow
from service.redact import redact_data
from service.settings import Settings
from service.webhooks import repository
from service.webhooks.repository import EventRow
from service.webhooks.signing import sign_headers
from service.webhooks.targets import TargetRefused, check_target

log = logging.getLogger(__name__)
CURSOR = "job_events"
FANOUT_BATCH = 500
SEND_BATCH = 32
SEND_THREADS = 4
USER_AGENT = "LinguDistill-Webhooks/1"
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 1000  # deliveries per batch, each in its own transaction: a long backlog never holds locks for long


def webhook_type(row: EventRow) -> str | None:
    if row.event.type == "checkpoint":
        return "checkpoint.created"
    status = row.event.data.get("status")
    return f"job.{status}" if row.event.type == "status" and status in repository.FINAL_STATUS_VALUES else None


def payload_of(row: EventRow, type: str) -> dict[str, Any]:
    event = row.event
    data: dict[str, Any] = {"job_id": event.job_id, "job_name": row.job_name, "event_id": event.id}
    data |= {"attempt": event.attempt, **redact_data(event.data)}  # no worker path leaves in a webhook either
    if type == "job.succeeded":
        data["report_passed"] = row.report_passed
    if row.control_job_id is not None:
        data["control_job_id"] = row.control_job_id
    if row.control_of is not None:  # a control arm's webhook names the job it is the control of
        data["control_of"] = row.control_of
    data["links"] = {"job": f"/v1/jobs/{event.job_id}", "report": f"/v1/jobs/{event.job_id}/report"}
    return {"type": type, "timestamp": event.created_at.isoformat(), "data": data}


def _subscribed(endpoint: WebhookEndpoint, row: EventRow, type: str) -> bool:
    return (
        endpoint.tenant_id == row.tenant_id and type in endpoint.events and endpoint.created_at <= row.event.created_at
    )


def fan_out(sessions: sessionmaker[Session], settings: Settings) -> int:
    """Turn new job events into pending deliveries; returns how many events were read."""
    with session_scope(sessions) as session:
        cursor = repository.lock_cursor(session, CURSOR)
        if cursor is None:
            return 0  # another process holds the cursor
        rows = repository.relevant_events(session, cursor.last_event_id, FANOUT_BATCH)
        endpoints = repository.endpoints_of_tenants(session, (r.tenant_id for r in rows))
        now = utcnow()
        deliveries = [
            _delivery_row(endpoint, row, type, now)
            for row in rows
            if (type := webhook_type(row)) is not None
            for endpoint in endpoints
            if _subscribed(endpoint, row, type)
        ]
        repository.insert_deliveries(session, deliveries)
        horizon = repository.settled_horizon(
            session, cursor.last_event_id, now - timedelta(seconds=settings.webhook_event_lag_s)
        )
        if len(rows) == FANOUT_BATCH and horizon is not None:
            horizon = min(horizon, rows[-1].event.id)  # the rest of the backlog comes on the next pass
        if horizon is not None:
            cursor.last_event_id = horizon
        return len(rows)


def _delivery_row(endpoint: WebhookEndpoint, row: EventRow, type: str, now: Any) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "endpoint_id": endpoint.id,
        "event_id": row.event.id,
        "event_type": type,
        "job_id": row.event.job_id,
        "payload": payload_of(row, type),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def post_signed(http: httpx.Client, outgoing: Outgoing, allow_private: bool) -> AttemptResult:
    """One attempt: re-check the target (fresh DNS), pin the checked address, sign, POST, never follow redirects."""
    started = time.monotonic()

    def result(status: int | None, error: str | None) -> AttemptResult:
        return AttemptResult(status, error, int((time.monotonic() - started) * 1000))

    try:
        target = check_target(outgoing.url, allow_private)
    except TargetRefused as exc:
        return result(None, f"target refused: {exc}")
    body = json.dumps(outgoing.payload, separators=(",", ":")).encode()
    headers = sign_headers(outgoing.secret, outgoing.delivery_id, body)
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT, "host": target.host_header}
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        response = http.post(target.connect_url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return result(None, f"{type(exc).__name__}: {exc}"[:1000])
    if response.is_success:
        return result(response.status_code, None)
    if response.is_redirect:
        return result(response.status_code, f"redirect to {response.headers.get('location')!r} not followed")
    return result(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")


def backoff_s(attempts: int, settings: Settings) -> float:
    """base x 4^(attempts-1), capped, with ±20% jitter so failed deliveries do not retry in lockstep."""
    delay = min(settings.webhook_retry_max_s, settings.webhook_retry_base_s * 4 ** (attempts - 1))
    return delay * random.uniform(0.8, 1.2)


def record(sessions: sessionmaker[Session], outgoing: Outgoing, result: AttemptResult, settings: Settings) -> None:
    now = utcnow()
    values: dict[str, Any] = {"attempts": outgoing.attempt, "last_status_code": result.status_code}
    values["last_error"] = result.error
    if result.ok:
        values |= {"status": "succeeded", "next_attempt_at": None, "finished_at": now}
    elif outgoing.attempt >= settings.webhook_max_attempts:
        values |= {"status": "failed", "next_attempt_at": None, "finished_at": now}
    else:
        values["next_attempt_at"] = now + timedelta(seconds=backoff_s(outgoing.attempt, settings))
    attempt = WebhookAttempt(
        delivery_id=outgoing.delivery_id,
        attempt=outgoing.attempt,
        status_code=result.status_code,
        error=result.error,
        duration_ms=result.duration_ms,
        created_at=now,
    )
    with session_scope(sessions) as session:
        repository.record_attempt(session, outgoing.delivery_id, attempt, values)


def claim_due(sessions: sessionmaker[Session], settings: Settings) -> list[Outgoing]:
    now = utcnow()
    hold = now + timedelta(seconds=2 * settings.webhook_timeout_s + 30)  # a crashed sender's claim expires
    claimed = []
    with session_scope(sessions) as session:
        for delivery_id in repository.due_deliveries(session, now, SEND_BATCH):
            if not repository.claim_delivery(session, delivery_id, now, hold):
                continue
            found = repository.delivery_with_endpoint(session, delivery_id)
            if found is not None:
                delivery, endpoint = found
                claimed.append(
                    Outgoing(delivery.id, delivery.attempts + 1, endpoint.url, endpoint.secret, delivery.payload)
                )
    return claimed


def prune_deliveries(sessions: sessionmaker[Session], settings: Settings, batch_size: int = PRUNE_BATCH) -> int:
    """Delete deliveries settled more than the retention ago, batch by batch; returns how many were deleted."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    finished_before = utcnow() - timedelta(days=settings.webhook_delivery_retention_days)
    total = 0
    while True:
        with session_scope(sessions) as session:
            deleted = repository.delete_settled_deliveries(session, finished_before, batch_size)
        total += deleted
        if deleted < batch_size:
            return total


class DeliveryLoop:
    """A daemon thread: every `webhook_poll_interval_s`, fan out new events and send what is due; prune hourly."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sessions, self.settings, self.clock = sessions, settings, clock
        self.last_prune: float | None = None
        self.http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)
        self.pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="webhook-send")
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2 * self.settings.webhook_timeout_s)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def run_once(self) -> int:
        """One pass; returns the number of attempts made."""
        fan_out(self.sessions, self.settings)
        outgoing = claim_due(self.sessions, self.settings)
        list(self.pool.map(self._send, outgoing))
        self.prune_if_due()
        return len(outgoing)

    def prune_if_due(self) -> int:
        """Prune at the first pass, then at most once per `PRUNE_EVERY_S`; returns how many rows were deleted."""
        now = self.clock()
        if self.last_prune is not None and now - self.last_prune < PRUNE_EVERY_S:
            return 0
        self.last_prune = now  # set first: a failing prune is retried in an hour, not on every pass
        pruned = prune_deliveries(self.sessions, self.settings)
        if pruned:
            days = self.settings.webhook_delivery_retention_days
            log.info("pruned %d webhook deliveries settled more than %d days ago", pruned, days)
        return pruned

    def _send(self, outgoing: Outgoing) -> None:
        result = post_signed(self.http, outgoing, self.settings.allow_private_network)
        record(self.sessions, outgoing, result, self.settings)

    def _run(self) -> None:
        while not self.stopping.wait(self.settings.webhook_poll_interval_s):
            try:
                self.run_once()
            except Exception:  # the database may be briefly away; the next pass retries
                log.exception("webhook delivery pass failed")


@asynccontextmanager
async def delivery_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: run the delivery loop while the API serves (unless disabled in the settings)."""
    state = app.state.services
    loop = DeliveryLoop(state.sessions, state.settings) if state.settings.webhook_delivery_enabled else None
    if loop is not None:
        loop.start()
    try:
        yield
    finally:
        if loop is not None:
            loop.close()
