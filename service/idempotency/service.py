"""Idempotency-Key handling for POST requests.

The key is reserved in its own short transaction, so a concurrent duplicate sees it at once and gets 409; the
response is stored in the request's own transaction, so it is recorded exactly when the job is.
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


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


def request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def begin(
    sessions: sessionmaker[Session], tenant_id: str, key: str, payload_hash: str, in_flight_s: float
) -> Replay | None:
    """Reserve `key`; a Replay if the same request already completed. Raises on a reused key or one in flight."""
    with session_scope(sessions) as session:
        if repository.try_reserve(session, tenant_id, key, payload_hash):
            return None
        row = repository.find(session, tenant_id, key)
        if row is None:  # released meanwhile: reserve again
            if repository.try_reserve(session, tenant_id, key, payload_hash):
                return None
            raise IdempotencyInFlight()
        if row.request_hash != payload_hash:
            raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
        if row.state == "done":
            return Replay(row.response_status or 200, row.response_body or {})
        if repository.take_over_stale(session, row.id, payload_hash, utcnow() - timedelta(seconds=in_flight_s)):
            return None
        raise IdempotencyInFlight("retry when the first request has finished")


def complete(session: Session, tenant_id: str, key: str, status: int, body: dict[str, Any]) -> None:
    repository.complete(session, tenant_id, key, status, body)


def release(sessions: sessionmaker[Session], tenant_id: str, key: str) -> None:
    """The request failed: free the key so the client can retry it."""
    with session_scope(sessions) as session:
        repository.release(session, tenant_id, key)
