from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.schemas import CursorPage

# Tenant names go into text columns: no control characters (Postgres refuses NUL outright).
TENANT_NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class KeyCreate(BaseModel):
    tenant: str = Field(
        min_length=1, max_length=100, pattern=TENANT_NAME_PATTERN, description="Tenant name (created if new)."
    )
    admin: bool = Field(False, description="An admin key sees every tenant's objects and manages keys.")


class KeyOut(BaseModel):
    """An API key as listed: never the key itself nor its hash."""

    id: str
    prefix: str = Field(description="The key's first characters, to recognise it (e.g. ldk_AbC12345).")
    tenant_id: str
    tenant: str = Field(description="The tenant's name.")
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = Field(None, description="Set once revoked: the key then authenticates nothing.")


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown only in this response: store it now.")


class KeyPage(CursorPage):
    items: list[KeyOut]
