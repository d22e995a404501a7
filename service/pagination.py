"""Opaque keyset cursors over (created_at, id): newest first, stable while rows are inserted."""

from __future__ import annotations

import base64
from datetime import datetime

from service.errors import AppError


class InvalidCursor(AppError):
    status, code, title = 422, "invalid_cursor", "The pagination cursor is invalid"


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, row_id = raw.split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("`after` must be a next_cursor returned by this API") from exc
