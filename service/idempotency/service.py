"""Idempotency-Key handling for POST /v1/jobs.

The key is reserved by an insert in the request's own transaction, and its response is stored in that same
transaction, so key and job are committed together or not at all. A duplicate sent while the first request is in
flight waits on the unique index until the first transaction ends, then replays its response (committed) or takes
the key (rolled back). An API that crashes mid-request loses its transaction with its connection: the key is free
again at once, and no retry is ever refused for a window after a crash.

A key is remembered for `idempotency_retention_h` (24 h by default, as Stripe does); after that the same key creates
a new job, and the worker's sweeper deletes the expired rows hourly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.errors import IdempotencyInFlight, IdempotencyKeyReused
from service.idempotency import repository
from service.models import utcnow

PRUNE_BATCH = 1000  # rows per transaction: a long backlog never holds locks for long


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


def request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def reserve(session: Session, tenant_id: str, key: str, payload_hash: str, retention_h: float) -> Replay | None:
    """Reserve `key` in the request's transaction; a Replay if the same request already completed with it. Raises on
    a key reused with another body."""
    repository.forget_stale(session, tenant_id, key, utcnow() - timedelta(hours=retention_h))
    if repository.try_reserve(session, tenant_id, key, payload_hash):
        return None
    row = repository.find(session, tenant_id, key)
    if row is None or row.state != "done":  # pruned between the two statements: rare, and worth a retry
        raise IdempotencyInFlight("retry the request")
    if row.request_hash != payload_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return Replay(row.response_status or 200, row.response_body or {})


def complete(session: Session, tenant_id: str, key: str, status: int, body: dict[str, Any]) -> None:
    repository.complete(session, tenant_id, key, status, body)


def prune_expired(sessions: sessionmaker[Session], retention_h: float, batch_size: int = PRUNE_BATCH) -> int:
    """Delete the keys older than the retention, batch by batch; returns how many were deleted."""
    created_before = utcnow() - timedelta(hours=retention_h)
    total = 0
    while True:
        with session_scope(sessions) as session:
            deleted = repository.delete_expired(session, created_before, batch_size)
        total += deleted
        if deleted < batch_size:
            return total
