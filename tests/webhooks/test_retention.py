"""Retention of the delivery log: settled deliveries past `webhook_delivery_retention_days` are deleted with their
attempts, in batches, at most once an hour per delivery loop. Each test runs in its own rolled-back Postgres
transaction or on its own SQLite copy (the service fixtures), so the live server's loop never sees these rows."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.models import Tenant, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id, utcnow
from service.settings import Settings
from service.webhooks import repository
from service.webhooks.delivery import PRUNE_EVERY_S, DeliveryLoop, prune_deliveries
from service.webhooks.signing import generate_secret
from tests.service.conftest import backend, sqlite_template  # noqa: F401 - fixtures behind isolated_sessions
from tests.service.conftest import sessions as isolated_sessions  # noqa: F401 - rolled back or a SQLite copy

both = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)

RETENTION_DAYS = 30
AddDelivery = Callable[..., str]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, webhook_delivery_retention_days=RETENTION_DAYS)


@pytest.fixture
def add_delivery(isolated_sessions: sessionmaker[Session]) -> AddDelivery:  # noqa: F811
    """Adds a delivery (and `attempts` attempt rows) on one endpoint; returns its id."""
    with session_scope(isolated_sessions) as session:
        tenant = Tenant(name=f"retention-{secrets.token_hex(4)}")
        session.add(tenant)
        session.flush()
        endpoint = WebhookEndpoint(
            tenant_id=tenant.id, url="https://example.com/hook", events=["job.failed"], secret=generate_secret()
        )
        session.add(endpoint)
        session.flush()
        endpoint_id = endpoint.id
    event_ids = iter(range(1, 1_000_000))

    def add(status: str, created: datetime, finished: datetime | None, attempts: int = 1) -> str:
        delivery_id = new_id("msg")
        with session_scope(isolated_sessions) as session:
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event_id=next(event_ids),
                    event_type="job.failed",
                    job_id="job_1",
                    payload={},
                    status=status,
                    attempts=attempts,
                    next_attempt_at=created if status == "pending" else None,
                    created_at=created,
                    finished_at=finished,
                )
            )
            session.flush()
            for n in range(1, attempts + 1):
                session.add(WebhookAttempt(delivery_id=delivery_id, attempt=n, status_code=500, created_at=created))
        return delivery_id

    return add


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


def remaining(sessions: sessionmaker[Session]) -> tuple[set[str], dict[str, int]]:
    """The ids of the deliveries left, and how many attempts each delivery id still has."""
    with session_scope(sessions) as session:
        ids = set(session.scalars(select(WebhookDelivery.id)))
        stmt = select(WebhookAttempt.delivery_id, func.count()).group_by(WebhookAttempt.delivery_id)
        attempts = {delivery_id: count for delivery_id, count in session.execute(stmt)}
    return ids, attempts


@both
def test_settled_deliveries_past_retention_go_with_their_attempts(
    isolated_sessions: sessionmaker[Session],  # noqa: F811
    settings: Settings,
    add_delivery: AddDelivery,
) -> None:
    old_success = add_delivery("succeeded", days_ago(31), days_ago(31), attempts=1)
    old_failure = add_delivery("failed", days_ago(40), days_ago(39), attempts=3)
    recent_success = add_delivery("succeeded", days_ago(29), days_ago(29))
    # created long ago but gave up only recently: the retention counts from the outcome
    long_retried = add_delivery("failed", days_ago(45), days_ago(2), attempts=8)
    old_pending = add_delivery("pending", days_ago(90), None, attempts=5)

    assert prune_deliveries(isolated_sessions, settings) == 2

    ids, attempts = remaining(isolated_sessions)
    assert ids == {recent_success, long_retried, old_pending}
    assert attempts == {recent_success: 1, long_retried: 8, old_pending: 5}
    assert old_success not in attempts and old_failure not in attempts


@both
def test_a_pending_delivery_is_kept_even_with_a_finished_at(
    isolated_sessions: sessionmaker[Session],  # noqa: F811
    settings: Settings,
    add_delivery: AddDelivery,
) -> None:
    pending = add_delivery("pending", days_ago(90), days_ago(90))

    assert prune_deliveries(isolated_sessions, settings) == 0
    assert remaining(isolated_sessions)[0] == {pending}


@both
def test_a_backlog_is_deleted_in_batches(
    isolated_sessions: sessionmaker[Session],  # noqa: F811
    settings: Settings,
    add_delivery: AddDelivery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(25):
        add_delivery("succeeded", days_ago(60), days_ago(60))
    kept = add_delivery("failed", days_ago(1), days_ago(1))
    batches: list[int] = []
    delete_batch = repository.delete_settled_deliveries

    def recording(session: Session, finished_before: datetime, limit: int) -> int:
        batches.append(deleted := delete_batch(session, finished_before, limit))
        return deleted

    monkeypatch.setattr(repository, "delete_settled_deliveries", recording)

    assert prune_deliveries(isolated_sessions, settings, batch_size=10) == 25
    assert batches == [10, 10, 5]
    assert remaining(isolated_sessions) == ({kept}, {kept: 1})


# SQLite only: a whole pass on the Postgres fixture would also read and claim the rows the live server's tests
# committed to the same database
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_loop_prunes_at_most_once_an_hour(
    isolated_sessions: sessionmaker[Session],  # noqa: F811
    settings: Settings,
    add_delivery: AddDelivery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    loop = DeliveryLoop(isolated_sessions, settings, clock=lambda: now[0])
    try:
        first = add_delivery("succeeded", days_ago(31), days_ago(31))
        with caplog.at_level(logging.INFO, logger="service.webhooks.delivery"):
            loop.run_once()  # the first pass prunes
        assert first not in remaining(isolated_sessions)[0]
        assert "pruned 1 webhook deliveries" in caplog.text

        second = add_delivery("succeeded", days_ago(31), days_ago(31))
        now[0] += PRUNE_EVERY_S - 1
        loop.run_once()
        assert second in remaining(isolated_sessions)[0]  # not yet an hour since the last prune

        now[0] += 1
        loop.run_once()
        assert second not in remaining(isolated_sessions)[0]
    finally:
        loop.close()
