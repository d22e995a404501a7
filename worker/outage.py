"""Riding out a database outage: the supervisor's writes wait for the database instead of ending the attempt.

A healthy job must not fail because Postgres restarted or the network blinked. Each database call of an attempt
goes through `ride_out`: a connection error is retried with exponential backoff (0.2 s doubling to 1 s) until
the database answers or `db_outage_limit_s` (default 300 s) has passed; only then does the error end the attempt.
An error the database itself raises (a constraint, a bad query) is not an outage and is raised at once.
While a call waits, the training child trains on; its events queue up in the pipe (or events.jsonl).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_DELAY_S, MAX_DELAY_S = 0.2, 1.0  # short: a heartbeat must land in the first second the database is back


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable (refused, reset, restarting), as opposed to refusing a statement."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def ride_out(call: Callable[[], T], limit_s: float, what: str) -> T:
    """`call()`, retried through a database outage of up to `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    delay, failures = FIRST_DELAY_S, 0
    while True:
        try:
            result = call()
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() + delay > deadline:
                raise
            failures += 1
            if failures == 1:
                log.warning("%s: the database is unreachable (%s); retrying for up to %.0f s", what, exc, limit_s)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if failures:
            log.warning("%s: the database answered again after %d failed tries", what, failures)
        return result
