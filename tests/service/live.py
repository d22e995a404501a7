"""For tests on the committed live database: jobs they leave queued would be counted by every later test's queue
position (the embedded broker is one queue), so each is ended when its test ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from service.lifecycle import JobStatus
from service.models import Job


@pytest.fixture(name="end_live_jobs")
def end_live_jobs_fixture(live_sessions) -> Iterator[list[str]]:
    """Append the ids of live jobs a test creates; those still queued are cancelled afterwards."""
    ids: list[str] = []
    yield ids
    with live_sessions() as session:
        queued = update(Job).where(Job.id.in_(ids), Job.status == JobStatus.queued)
        session.execute(queued.values(status=JobStatus.cancelled))
        session.commit()
