"""Response documents shared by every resource, pydantic only (the client reads them without the server's
libraries): the RFC 9457 problem document that service.errors raises and renders, and the cursor page."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 'mixture', 0, 'uri'].")
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str = Field(description="Stable machine-readable error code.")
    errors: list[FieldError] | None = None


class CursorPage(BaseModel):
    """The paging fields of every list page (service.pagination); each page adds its `items`."""

    next_cursor: str | None = Field(None, description="Pass as `after` to get the next (older) page.")

    @computed_field(description="True when more items follow this page: fetch them with `after=next_cursor`.")
    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None
