"""Keyset pagination over (created_at, id), newest first: the one implementation every list route uses.

A cursor is opaque to clients: the (created_at, id) of the last row of a page, encoded. The next page is every row
strictly older than it, so rows inserted meanwhile never shift a page and no row is seen twice. One row more than
the page is read to tell whether more follow (`has_more`) without a count.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from service.errors import AppError

T = TypeVar("T")


class InvalidCursor(AppError):
    status, code, title = 422, "invalid_cursor", "The pagination cursor is invalid"


class Keyed(Protocol):
    """A model with the two columns of the keyset."""

    created_at: InstrumentedAttribute[datetime]
    id: InstrumentedAttribute[str]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: this is the last page


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, row_id = raw.split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("`after` must be a next_cursor returned by this API") from exc


def newest_first(stmt: Select[Any], model: type[Keyed], limit: int | None, after: str | None) -> Select[Any]:
    """`stmt` ordered newest first, starting after the cursor `after`, reading one row more than `limit` (None:
    every row). Cut the rows with `page_of`."""
    if after is not None:
        created, row_id = decode_cursor(after)
        stmt = stmt.where(or_(model.created_at < created, and_(model.created_at == created, model.id < row_id)))
    stmt = stmt.order_by(model.created_at.desc(), model.id.desc())
    return stmt if limit is None else stmt.limit(limit + 1)


def _own_key(row: Any) -> tuple[datetime, str]:
    return row.created_at, row.id


def page_of(rows: Sequence[T], limit: int | None, key: Callable[[T], tuple[datetime, str]] = _own_key) -> Page[T]:
    """The page of `rows` read by `newest_first`; `key` gives a row's (created_at, id) when it is not the row's own."""
    if limit is None or len(rows) <= limit:
        return Page(list(rows), None)
    page = list(rows[:limit])
    return Page(page, encode_cursor(*key(page[-1])))
