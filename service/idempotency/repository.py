"""Every query on Idempotency-Key rows. None of these commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import IdempotencyKey


def find(session: Session, tenant_id: str, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
    return session.scalar(stmt)


def try_reserve(session: Session, tenant_id: str, key: str, request_hash: str) -> bool:
    """Insert the key's row in this transaction; False if the (tenant, key) pair exists (the unique index decides,
    and on Postgres a concurrent uncommitted insert of the same pair makes this wait for its outcome)."""
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_hash=request_hash))
    except IntegrityError:
        return False
    return True


def forget_stale(session: Session, tenant_id: str, key: str, created_before: datetime) -> None:
    """Delete the key's row if it is past the retention, or an in-flight row committed by an older version of the
    service (reservations are never committed in flight now)."""
    stale = or_(IdempotencyKey.created_at < created_before, IdempotencyKey.state == "in_flight")
    stmt = delete(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key, stale)
    session.execute(stmt.execution_options(synchronize_session=False))


def complete(session: Session, tenant_id: str, key: str, status: int, body: dict[str, Any]) -> None:
    stmt = (
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
        .values(state="done", response_status=status, response_body=body)
    )
    session.execute(stmt)


def delete_expired(session: Session, created_before: datetime, limit: int) -> int:
    """Delete up to `limit` rows created before `created_before`; returns how many."""
    batch = select(IdempotencyKey.id).where(IdempotencyKey.created_at < created_before).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)  # two pruning workers split the rows instead of waiting
    ids = list(session.scalars(batch))  # two statements: see webhooks.repository.delete_settled_deliveries
    if not ids:
        return 0
    stmt = delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids))
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount
