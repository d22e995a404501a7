from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import IdempotencyKey, utcnow


def find(session: Session, tenant_id: str, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
    return session.scalar(stmt)


def try_reserve(session: Session, tenant_id: str, key: str, request_hash: str) -> bool:
    """Insert an in-flight row; False if the (tenant, key) pair exists already (the unique constraint decides)."""
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_hash=request_hash))
    except IntegrityError:
        return False
    return True


def take_over_stale(session: Session, row_id: int, request_hash: str, older_than: datetime) -> bool:
    stmt = (
        update(IdempotencyKey)
        .where(IdempotencyKey.id == row_id, IdempotencyKey.state == "in_flight", IdempotencyKey.created_at < older_than)
        .values(created_at=utcnow(), request_hash=request_hash)
    )
    return session.execute(stmt).rowcount == 1


def complete(session: Session, tenant_id: str, key: str, status: int, body: dict[str, Any]) -> None:
    stmt = (
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
        .values(state="done", response_status=status, response_body=body)
    )
    session.execute(stmt)


def release(session: Session, tenant_id: str, key: str) -> None:
    row = find(session, tenant_id, key)
    if row is not None and row.state == "in_flight":
        session.delete(row)
