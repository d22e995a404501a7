"""The job lifecycle: every status, every allowed move, and how each one is classified. The one definition.

A plain module (the standard library only): the ORM columns, the API schemas (and so the OpenAPI enum the web UI
reads), the webhooks, the worker and the Python client all import it, and the client stays free of sqlalchemy and
fastapi.

    queued -> validating -> running -> evaluating -> succeeded
    any non-final -> cancelling -> cancelled;  any non-final -> failed (with a FailureReason)
    failed/cancelled --retry--> queued (a new attempt, resuming from the last complete checkpoint)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """A job's status: queued -> validating -> running -> evaluating -> succeeded; any other status may go to
    cancelling -> cancelled or to failed; a retry re-queues a failed or cancelled job. `x-final`: the statuses in
    which the job has finished."""

    # in the order a job meets them: the OpenAPI enum, and so the web UI's status list, keeps this order

    queued = "queued"
    validating = "validating"
    running = "running"
    evaluating = "evaluating"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The OpenAPI enum also names the final statuses (`x-final`), so the web UI needs no list of its own."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["x-final"] = [s.value for s in cls if s in FINAL_STATUSES]
        return schema


class FailureReason(StrEnum):
    bad_input = "bad_input"
    out_of_memory = "out_of_memory"
    infrastructure = "infrastructure"
    cancelled = "cancelled"
    timeout = "timeout"


S = JobStatus
FINAL_STATUSES = frozenset({S.succeeded, S.failed, S.cancelled})
ACTIVE_STATUSES = frozenset({S.validating, S.running, S.evaluating})  # a worker holds the lease
NOT_FINAL_STATUSES = frozenset(S) - FINAL_STATUSES
# Every allowed move. -> queued from an active state is the sweeper re-queueing an expired lease;
# from failed/cancelled it is a retry.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.queued: frozenset({S.validating, S.cancelled, S.failed}),
    S.validating: frozenset({S.running, S.cancelling, S.failed, S.queued}),
    S.running: frozenset({S.evaluating, S.succeeded, S.cancelling, S.failed, S.queued}),
    S.evaluating: frozenset({S.succeeded, S.cancelling, S.failed, S.queued}),
    S.cancelling: frozenset({S.cancelled, S.failed}),
    S.succeeded: frozenset(),
    S.failed: frozenset({S.queued}),
    S.cancelled: frozenset({S.queued}),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


def predecessors(target: JobStatus) -> frozenset[JobStatus]:
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
