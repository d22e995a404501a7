"""API key use cases: create, authenticate, list, revoke. No commits here: the request's session (or the CLI's
session_scope) commits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.auth import SHOWN_PREFIX_LEN, Principal, generate_key, hash_key
from service.errors import CannotRevokeOwnKey, KeyNotFound
from service.keys import repository
from service.keys.repository import KeyRow
from service.keys.schemas import KeyCreate, KeyCreated, KeyOut
from service.models import ApiKey, Tenant, utcnow


@dataclass(frozen=True)
class NewKey:
    key: str
    key_id: str
    tenant_id: str
    prefix: str


class AmbiguousKeyReference(Exception):
    """A prefix shared by several keys (the 12 characters shown rarely collide, but may)."""


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


def issue_key(session: Session, body: KeyCreate) -> KeyCreated:
    new = create_key(session, body.tenant, admin=body.admin)
    return KeyCreated(**key_view(*load_key(session, new.key_id)).model_dump(), key=new.key)


def list_keys(
    session: Session,
    *,
    tenant: str | None = None,
    include_revoked: bool = False,
    limit: int | None = None,
    after: str | None = None,
) -> tuple[list[KeyOut], str | None]:
    """Newest first; every key when `limit` is None, else one page and the cursor to the next."""
    page = repository.list_keys(session, tenant_name=tenant, include_revoked=include_revoked, limit=limit, after=after)
    return [key_view(key, owner) for key, owner in page.items], page.next_cursor


def load_key(session: Session, key_id: str) -> KeyRow:
    found = repository.get_key(session, key_id)
    if found is None:
        raise KeyNotFound(f"no API key {key_id}")
    return found


def find_key(session: Session, id_or_prefix: str) -> KeyRow:
    """The one key, revoked or not, whose id or shown prefix (`ldk_AbC12345`, a trailing … or ... allowed) this is."""
    ref = id_or_prefix.strip().removesuffix("…").removesuffix("...")
    found = repository.find_keys(session, ref)
    if not found:
        raise KeyNotFound(f"no API key with id or prefix {ref!r}")
    if len(found) > 1:
        ids = ", ".join(key.id for key, _ in found)
        raise AmbiguousKeyReference(f"{ref!r} matches more than one key ({ids}, ...); give the key id instead")
    return found[0]


def revoke_key(session: Session, found: KeyRow, *, caller_key_id: str | None = None) -> KeyOut:
    """Revoke the key; a key already revoked keeps its first revoked_at. `caller_key_id` is the key the request
    authenticated with: revoking it would lock the operator out mid-request, so that is refused."""
    key, tenant = found
    if key.revoked_at is None:
        if key.id == caller_key_id:
            raise CannotRevokeOwnKey("this request is authenticated with that key; revoke it with another admin key")
        repository.revoke_key(session, key, utcnow())
    return key_view(key, tenant)


def revoke_key_by_id(session: Session, principal: Principal, key_id: str) -> KeyOut:
    return revoke_key(session, load_key(session, key_id), caller_key_id=principal.key_id)


def key_view(key: ApiKey, tenant: Tenant) -> KeyOut:
    return KeyOut(
        id=key.id,
        prefix=key.prefix,
        tenant_id=tenant.id,
        tenant=tenant.name,
        admin=key.is_admin,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )
