"""The job lifecycle: every status, every allowed move, and how each one is classified. The one definition.

A plain module (the standard library only): the ORM columns, the API schemas (and so the OpenAPI enum the web UI
reads), the webhooks, the worker and the Python client all import it, and the client stays free of sqlalchemy and
fastapi.

    queued -> validating -> running -> evaluating -> succeeded
    any non-final -> cancelling -> cancelled;  any non-final -> failed (with a FailureReason)
    failed/cancelled --retry--> queued (a new attempt, resuming from the last complete checkpoint)
    a job with a control arm (evaluation.control): evaluating -> comparing -> succeeded | failed | cancelled;
        it waits there, holding no worker, until its control job is final (service.jobs.control)

    validating/running --pause--> pausing -> paused --resume--> queued (resuming from the pause's checkpoint)
    queued --pause--> paused (held at once: never dispatched while paused)
    pausing -> cancelling, paused -> cancelled (cancel);  pausing -> failed (the checkpoint could not be written)
    pausing -> evaluating (training ended before the pause landed: the job finishes)

Pausing: a worker still holds the lease; its training child saves a checkpoint at its next step boundary (paused
while validating, it stops once validation ends, before any step: the job resumes from where it was), the worker
uploads it, stops the child and releases the lease. Paused: no lease, no GPU, not final, and only resume or cancel
move it; the paused attempt does not count against max_attempts. An evaluating job is not paused (409): its
training is over, and the final scoring has no step to stop at.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """A job's status: queued -> validating -> running -> evaluating -> succeeded; any other status may go to
    cancelling -> cancelled or to failed; a retry re-queues a failed or cancelled job; a pause stops a job at a
    checkpoint (pausing -> paused, the GPU freed) and a resume re-queues it. A job with a control arm waits in
    comparing (no worker held) from its evaluation until its control is final and the lift is reported. `x-final`:
    the statuses in which the job has finished; `x-actions`: the statuses each user action (pause, resume) accepts."""

    # in the order a job meets them: the OpenAPI enum, and so the web UI's status list, keeps this order

    queued = "queued"
    validating = "validating"
    running = "running"
    evaluating = "evaluating"
    comparing = "comparing"  # trained and evaluated; waits for its control arm, then reports the lift
    pausing = "pausing"
    paused = "paused"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The OpenAPI enum also names the final statuses (`x-final`) and the statuses each user action accepts
        (`x-actions`), so the web UI needs no list of its own."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["x-final"] = [s.value for s in cls if s in FINAL_STATUSES]
        schema["x-actions"] = {action: [s.value for s in cls if s in accepted] for action, accepted in ACTIONS.items()}
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
LEASED_STATUSES = ACTIVE_STATUSES | {S.cancelling, S.pausing}  # ... also while it stops the job
# Not final, yet no worker holds the job, nothing heartbeats and it is not counted against the tenant's limit: a
# job with a control arm waiting for it (its control, queued or running, counts instead).
WAITING_STATUSES = frozenset({S.comparing})
NOT_FINAL_STATUSES = frozenset(S) - FINAL_STATUSES
# The statuses from which a user's pause and resume act (their routes: 409 from any other, except that pausing a
# pausing or paused job answers it unchanged).
PAUSABLE_STATUSES = frozenset({S.queued, S.validating, S.running})
RESUMABLE_STATUSES = frozenset({S.paused})
ACTIONS = {"pause": PAUSABLE_STATUSES, "resume": RESUMABLE_STATUSES}
# Every allowed move. -> queued from an active state is the sweeper re-queueing an expired lease;
# from failed/cancelled it is a retry.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.queued: frozenset({S.validating, S.cancelled, S.failed, S.paused}),
    S.validating: frozenset({S.running, S.cancelling, S.failed, S.queued, S.pausing}),
    S.running: frozenset({S.evaluating, S.succeeded, S.cancelling, S.failed, S.queued, S.pausing}),
    S.evaluating: frozenset({S.succeeded, S.comparing, S.cancelling, S.failed, S.queued}),
    S.comparing: frozenset({S.succeeded, S.failed, S.cancelled}),  # no worker to stop: a cancel ends it at once
    S.pausing: frozenset({S.paused, S.cancelling, S.failed, S.evaluating}),
    S.paused: frozenset({S.queued, S.cancelled}),
    S.cancelling: frozenset({S.cancelled, S.failed}),
    S.succeeded: frozenset(),
    S.failed: frozenset({S.queued}),
    S.cancelled: frozenset({S.queued}),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


def predecessors(target: JobStatus) -> frozenset[JobStatus]:
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
