from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant


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


def find_active_key(session: Session, key_hash: str) -> tuple[ApiKey, Tenant] | None:
    stmt = (
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row else None
