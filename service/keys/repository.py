"""Every query on tenants and API keys. Keys are not tenant-owned objects to an admin: these queries are unscoped,
and the routes that call them need an admin key. None of these commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant
from service.pagination import Page, newest_first, page_of

KeyRow = tuple[ApiKey, Tenant]


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def add_key(session: Session, tenant: Tenant, key_hash: str, prefix: str, is_admin: bool) -> ApiKey:
    key = ApiKey(tenant_id=tenant.id, key_hash=key_hash, prefix=prefix, is_admin=is_admin)
    session.add(key)
    session.flush()
    return key


def find_active_key(session: Session, key_hash: str) -> KeyRow | None:
    stmt = _with_tenant().where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row else None


def get_key(session: Session, key_id: str) -> KeyRow | None:
    row = session.execute(_with_tenant().where(ApiKey.id == key_id)).first()
    return (row[0], row[1]) if row else None


def find_keys(session: Session, id_or_prefix: str) -> list[KeyRow]:
    """Keys, revoked ones included, whose id or shown prefix is exactly `id_or_prefix` (two at most: enough to
    tell an ambiguous reference from a unique one)."""
    stmt = _with_tenant().where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
    return [(row[0], row[1]) for row in session.execute(stmt.order_by(ApiKey.id).limit(2))]


def list_keys(
    session: Session,
    *,
    tenant_name: str | None = None,
    include_revoked: bool = False,
    limit: int | None = None,
    after: str | None = None,
) -> Page[KeyRow]:
    """Newest first; every key when `limit` is None."""
    stmt = _with_tenant()
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    rows = [(row[0], row[1]) for row in session.execute(newest_first(stmt, ApiKey, limit, after))]
    return page_of(rows, limit, key=lambda row: (row[0].created_at, row[0].id))


def revoke_key(session: Session, key: ApiKey, at: datetime) -> ApiKey:
    key.revoked_at = at
    session.flush()
    return key


def _with_tenant() -> Select[tuple[ApiKey, Tenant]]:
    return select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
