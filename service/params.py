"""Types for what a client sends as a query, path or header value, so each rule is written once.

Every integer a client sends is bounded by the column it is compared with: Postgres refuses a larger one and
SQLite's driver raises OverflowError beyond 64 bits (a 500 and a dropped connection, issue 15). Python's int()
also refuses strings of more than 4300 digits and chokes on digits such as '²' that isdigit() lets through, so
the bound and the parse happen in pydantic, which answers each of these with a 422 like any invalid parameter."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval
from pydantic import StringConstraints

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# An event id or another BIGINT cursor: 0 .. 2^63-1.
Int64 = Annotated[int, Interval(ge=0, le=INT64_MAX)]
# A training step (an INTEGER column; the spec allows at most 10 million steps): 0 .. 2^31-1.
Step = Annotated[int, Interval(ge=0, le=INT32_MAX)]

# A name stored as text: no NUL (Postgres refuses it in text, SQLite would store it) and no other control
# character, so one rule gives the same 422 on both backends.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]
