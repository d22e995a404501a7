"""Every query on webhook endpoints, deliveries and attempts. API reads go through `scoped()` (the tenant filter);
the delivery loop's queries below them are unscoped by design (it serves every tenant). None of these commit."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.auth import Principal, scoped
from service.lifecycle import FINAL_STATUSES
from service.models import Job, JobEvent, WebhookAttempt, WebhookCursor, WebhookDelivery, WebhookEndpoint
from service.pagination import Page, newest_first, page_of

FINAL_STATUS_VALUES = tuple(sorted(s.value for s in FINAL_STATUSES))  # the job.<status> events
SETTLED_DELIVERY_STATUSES = ("succeeded", "failed")  # a retry is still "pending"; only these two are final

# --- API ----------------------------------------------------------------------------------------------------


def get_endpoint(session: Session, principal: Principal, webhook_id: str) -> WebhookEndpoint | None:
    stmt = scoped(select(WebhookEndpoint), WebhookEndpoint, principal).where(WebhookEndpoint.id == webhook_id)
    return session.scalar(stmt)


def add_endpoint(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    session.add(endpoint)
    session.flush()
    return endpoint


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    session.delete(endpoint)
    session.flush()


def list_endpoints(session: Session, principal: Principal, limit: int, after: str | None) -> Page[WebhookEndpoint]:
    stmt = scoped(select(WebhookEndpoint), WebhookEndpoint, principal)
    return page_of(session.scalars(newest_first(stmt, WebhookEndpoint, limit, after)).all(), limit)


def list_deliveries(
    session: Session, endpoint_id: str, limit: int, after: str | None, status: str | None
) -> Page[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return page_of(session.scalars(newest_first(stmt, WebhookDelivery, limit, after)).all(), limit)


def attempts_of(session: Session, delivery_ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
    grouped: dict[str, list[WebhookAttempt]] = defaultdict(list)
    if delivery_ids:
        stmt = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
        for attempt in session.scalars(stmt.order_by(WebhookAttempt.delivery_id, WebhookAttempt.id)):
            grouped[attempt.delivery_id].append(attempt)
    return grouped


# --- the delivery loop: from job events to deliveries ---------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    event: JobEvent
    tenant_id: str
    job_name: str
    report_passed: bool | None
    control_job_id: str | None = None  # evaluation.control: the job's control arm
    control_of: str | None = None  # on a control arm: its method job


def lock_cursor(session: Session, name: str) -> WebhookCursor | None:
    """The cursor row, locked until commit; None when another process holds it (it is doing the work)."""
    stmt = select(WebhookCursor).where(WebhookCursor.name == name)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
        row = session.scalar(stmt)
        if row is None and session.get(WebhookCursor, name) is None:
            return _create_cursor(session, name)
        return row
    return session.scalar(stmt) or _create_cursor(session, name)


def _create_cursor(session: Session, name: str) -> WebhookCursor:
    cursor = WebhookCursor(name=name, last_event_id=session.scalar(select(func.max(JobEvent.id))) or 0)
    session.add(cursor)
    session.flush()
    return cursor


def relevant_events(session: Session, after: int, limit: int) -> list[EventRow]:
    """Final-status and checkpoint events after `after`, with their job's tenant, name, report verdict and the
    other arm of a job with a control."""
    final = and_(JobEvent.type == "status", JobEvent.data["status"].as_string().in_(FINAL_STATUS_VALUES))
    passed = Job.report["passed"].as_boolean()
    stmt = (
        select(JobEvent, Job.tenant_id, Job.name, passed, Job.control_job_id, Job.control_of)
        .join(Job, Job.id == JobEvent.job_id)
        .where(JobEvent.id > after, or_(JobEvent.type == "checkpoint", final))
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return [EventRow(*row) for row in session.execute(stmt)]


def settled_horizon(session: Session, after: int, before: datetime) -> int | None:
    """The newest event id written before `before`: the cursor may move up to it."""
    return session.scalar(select(func.max(JobEvent.id)).where(JobEvent.id > after, JobEvent.created_at < before))


def endpoints_of_tenants(session: Session, tenant_ids: Iterable[str]) -> list[WebhookEndpoint]:
    ids = sorted(set(tenant_ids))
    if not ids:
        return []
    return list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id.in_(ids))))


def insert_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert, skipping (endpoint, event) pairs that already have a delivery: a re-read event is harmless."""
    if not rows:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(WebhookDelivery).values(rows).on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
    session.execute(stmt)


# --- the delivery loop: sending ---------------------------------------------------------------------------------


def due_deliveries(session: Session, now: datetime, limit: int) -> list[str]:
    stmt = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def claim_delivery(session: Session, delivery_id: str, now: datetime, until: datetime) -> bool:
    """Push the due time to `until` so no other loop sends it meanwhile; False if another loop claimed it first."""
    where = [
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
    ]
    stmt = update(WebhookDelivery).where(*where).values(next_attempt_at=until)
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1


def delivery_with_endpoint(session: Session, delivery_id: str) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
    stmt = (
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row else None


def record_attempt(session: Session, delivery_id: str, attempt: WebhookAttempt, values: dict[str, Any]) -> None:
    session.add(attempt)
    stmt = update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
    session.execute(stmt.execution_options(synchronize_session=False))


# --- the delivery loop: retention ---------------------------------------------------------------------------------


def delete_settled_deliveries(session: Session, finished_before: datetime, limit: int) -> int:
    """Delete up to `limit` deliveries that succeeded or failed for good before `finished_before`; returns how many.

    Age counts from `finished_at`, not `created_at`: a delivery that retried for hours stays visible for the whole
    retention after its outcome, like one that succeeded at once. Pending rows have no `finished_at`, and the status
    test keeps them even so. The attempts go with their delivery through ON DELETE CASCADE (SQLite enforces it:
    service.db turns foreign_keys on).
    """
    settled = and_(WebhookDelivery.status.in_(SETTLED_DELIVERY_STATUSES), WebhookDelivery.finished_at < finished_before)
    batch = select(WebhookDelivery.id).where(settled).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)  # two pruning processes split the rows instead of waiting
    # Two statements on purpose: in `DELETE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE)` Postgres may rescan
    # the subquery once per row, each rescan skipping the rows already deleted, so `n` would bound nothing.
    ids = list(session.scalars(batch))
    # `settled` again below: on SQLite nothing locks the rows between the two statements
    if not ids:
        return 0
    stmt = delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids), settled)
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount
