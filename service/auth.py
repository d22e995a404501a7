"""API keys: generation, hashing, and the principal a request acts as. The tenant filter lives here, once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select

KEY_PREFIX = "ldk_"
SHOWN_PREFIX_LEN = 12
T = TypeVar("T", bound=tuple[Any, ...])


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, through one key; an admin key sees every tenant's objects."""

    tenant_id: str
    key_id: str
    is_admin: bool = False
    max_active_jobs: int | None = None  # the tenant's own limit, if it has one


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def scoped(stmt: Select[T], model: Any, principal: Principal) -> Select[T]:
    """Restrict `stmt` to rows `principal` may see. Every tenant-owned query goes through here."""
    if principal.is_admin:
        return stmt
    return stmt.where(model.tenant_id == principal.tenant_id)
