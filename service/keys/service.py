from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.auth import SHOWN_PREFIX_LEN, Principal, generate_key, hash_key
from service.keys import repository


@dataclass(frozen=True)
class NewKey:
    key: str
    key_id: str
    tenant_id: str
    prefix: str


def create_key(session: Session, tenant_name: str, *, admin: bool = False) -> NewKey:
    """A new API key for `tenant_name` (created if needed). The plain key exists only in the return value."""
    tenant = repository.get_or_create_tenant(session, tenant_name)
    key = generate_key()
    row = repository.add_key(session, tenant, hash_key(key), key[:SHOWN_PREFIX_LEN], admin)
    return NewKey(key=key, key_id=row.id, tenant_id=tenant.id, prefix=row.prefix)


def authenticate(session: Session, key: str) -> Principal | None:
    found = repository.find_active_key(session, hash_key(key))
    if found is None:
        return None
    row, tenant = found
    return Principal(
        tenant_id=row.tenant_id, key_id=row.id, is_admin=row.is_admin, max_active_jobs=tenant.max_active_jobs
    )
