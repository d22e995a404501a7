"""Key management for operators: every route here needs an admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import AdminDep, SessionDep
from service.errors import problem_responses
from service.keys import service
from service.keys.schemas import TENANT_NAME_PATTERN, KeyCreate, KeyCreated, KeyOut, KeyPage

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get(
    "",
    response_model=KeyPage,
    responses=problem_responses(403, 422),
    summary="List API keys, newest first (admin)",
    description="Every tenant's keys; never the key itself nor its hash.",
)
def list_keys(
    session: SessionDep,
    _: AdminDep,
    tenant: Annotated[
        str | None, Query(max_length=100, pattern=TENANT_NAME_PATTERN, description="Only this tenant's keys (by name).")
    ] = None,
    include_revoked: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(description="A next_cursor from the previous page.")] = None,
) -> KeyPage:
    items, cursor = service.list_keys(session, tenant=tenant, include_revoked=include_revoked, limit=limit, after=after)
    return KeyPage(items=items, next_cursor=cursor)


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses=problem_responses(403, 422),
    summary="Create an API key (admin)",
    description="The tenant is created if new. The response carries the key; it is never shown again.",
)
def create_key(body: KeyCreate, session: SessionDep, _: AdminDep) -> KeyCreated:
    return service.issue_key(session, body)


@router.post(
    "/{key_id}/revoke",
    response_model=KeyOut,
    responses=problem_responses(403, 404, 409),
    summary="Revoke an API key (admin)",
    description="The key authenticates nothing from now on; revoking it again changes nothing. The key this "
    "request is authenticated with cannot be revoked (409).",
)
def revoke_key(key_id: str, session: SessionDep, admin: AdminDep) -> KeyOut:
    return service.revoke_key_by_id(session, admin, key_id)
