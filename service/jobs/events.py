"""The job event log as Server-Sent Events: polls the database, resumes after Last-Event-ID, ends after a
final state's events are sent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.jobs import repository
from service.jobs.schemas import EventOut
from service.models import JobEvent

BATCH = 200
KEEPALIVE_S = 15.0


def format_sse(event: JobEvent) -> str:
    payload = EventOut.model_validate(event, from_attributes=True).model_dump_json()
    return f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"


def _poll(sessions: sessionmaker[Session], job_id: str, after: int | None) -> tuple[bool, list[JobEvent]]:
    """(the job is final, the events after `after`), status read first so no final event is missed."""
    with sessions() as session:
        state = repository.get_job_state(session, job_id)
        final = state is None or state.status.is_final
        return final, repository.list_events(session, job_id, after, BATCH)


async def event_stream(
    sessions: sessionmaker[Session], job_id: str, after: int | None, poll_s: float, max_s: float
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + max_s
    last_sent = time.monotonic()
    while time.monotonic() < deadline:
        final, events = await run_in_threadpool(_poll, sessions, job_id, after)
        for event in events:
            yield format_sse(event)
            after = event.id
        if events:
            last_sent = time.monotonic()
            continue
        if final:
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(poll_s)


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())
