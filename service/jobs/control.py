"""A job and its control arm (`evaluation.control: true`): how the pair ends.

`service.jobs.service.create_job` submits the control arm with the job, in the same transaction: the same spec
with `kd_sources: none` (lingudistill.evaluation.compare.control_spec), linked both ways (`control_job_id` on the
method job, `control_of` on the control). Both are ordinary jobs: queued, claimed, cancelled and retried alike, so two
workers run them in parallel.

The method job must not be `succeeded` before its lift exists, and must not hold a worker while it waits (one worker
would deadlock). So when its run ends it moves to `comparing` (no lease; service.lifecycle) and its worker moves on.
Whichever arm is final last concludes the method with `settle`: the worker of each arm calls it after the arm's own
end, and the sweeper calls it for a method still comparing next to a final control (a worker that died in between,
a queued control cancelled through the API). Concluding:

    control succeeded      the lift (service.comparison.compare_jobs), the combined report uploaded over the method's
                           and stored in its row; the verdict counts gates.min_lift; the method -> succeeded
    control failed or      the method -> failed, with the control's failure reason and a message naming the control
    cancelled              arm: a lift gate must never pass without a lift. Retrying the method retries both arms.
    arms not comparable    the method -> failed (bad_input), with the engine's reason

The comparison (downloads, bootstrap, upload) runs outside any transaction: it is deterministic, so two arms that
conclude at once compute the same report. The move itself is made under a lock on the method's row, after checking
that the method still compares and that the control is still in the state the outcome was computed from, so the
method is concluded once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.comparison import compare_jobs, upload_combined_report
from service.db import session_scope
from service.jobs import repository
from service.jobs.repository import ControlPair
from service.lifecycle import WAITING_STATUSES, FailureReason, JobStatus
from service.storage import Storage

log = logging.getLogger(__name__)
S = JobStatus


@dataclass(frozen=True)
class Conclusion:
    """What the method job becomes, given the control in `control_status`."""

    status: JobStatus
    control_status: JobStatus
    fields: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)


def ready(pair: ControlPair) -> bool:
    """The method waits for its control, and the control is final: the pair can be concluded."""
    return pair.method.status in WAITING_STATUSES and pair.control.status.is_final


def settle(sessions: sessionmaker[Session], storage: Storage, job_id: str) -> JobStatus | None:
    """Conclude the pair `job_id` belongs to (either arm) if it is ready; the method's new status, or None when
    there is nothing to do (no control, an arm still running, or already concluded). Safe to repeat and to race."""
    with session_scope(sessions) as session:
        method_id = repository.method_job_of(session, job_id)
        pair = repository.control_pair(session, method_id) if method_id else None
    if pair is None or not ready(pair):
        return None
    conclusion = conclude_from(pair, storage)
    with session_scope(sessions) as session:
        return apply(session, pair.method.job_id, conclusion)


def settle_stranded(sessions: sessionmaker[Session], storage: Storage) -> int:
    """The sweeper's pass: conclude the methods still comparing next to a final control; returns how many."""
    with session_scope(sessions) as session:
        stranded = repository.waiting_for_final_control(session)
    concluded = 0
    for method_id in stranded:
        try:
            concluded += settle(sessions, storage, method_id) is not None
        except Exception:  # storage away: the method keeps waiting and the next sweep tries again
            log.exception("could not conclude job %s with its control arm", method_id)
    return concluded


def conclude_from(pair: ControlPair, storage: Storage | None) -> Conclusion:
    """The method's conclusion for a ready pair; only a succeeded control needs `storage` (the comparison)."""
    control = pair.control
    if control.status is not S.succeeded:
        reason = control.failure_reason or FailureReason.infrastructure
        detail = f": {control.failure_message}" if control.failure_message else ""
        message = f"the control arm {control.job_id} {control.status.value} ({reason.value}){detail}; no lift"
        fields = {"failure_reason": reason, "failure_message": message[:4000]}
        return Conclusion(S.failed, control.status, fields)
    assert storage is not None, "a succeeded control arm is compared through storage"
    try:
        report = compare_jobs(storage, pair.method.job_id, control.job_id)
    except (ValueError, LookupError) as exc:  # CompareError, ItemMismatch, RunFilesMissing, a malformed report;
        # a storage outage is none of these: it propagates, the method keeps waiting and the sweeper tries again
        message = f"the job cannot be compared with its control arm {control.job_id}: {exc}"
        fields = {"failure_reason": FailureReason.bad_input, "failure_message": message[:4000]}
        return Conclusion(S.failed, control.status, fields)
    upload_combined_report(storage, pair.method.job_id, report)
    lift = report["lift"]["mean_recovery"]
    event = {"control_job_id": control.job_id, "passed": report["passed"]}
    event["mean_recovery_lift"] = {key: lift[key] for key in ("estimate", "low", "high")}
    return Conclusion(S.succeeded, control.status, {"report": dict(report)}, event)


def apply(session: Session, method_job_id: str, conclusion: Conclusion) -> JobStatus | None:
    """Move the method as concluded, under its row lock, if the pair is still as it was when concluded."""
    pair = repository.control_pair(session, method_job_id, lock=True)
    if pair is None or not ready(pair) or pair.control.status is not conclusion.control_status:
        return None
    method = pair.method
    if conclusion.event:
        repository.append_event(session, method.job_id, method.attempt, "comparison", conclusion.event)
    if not repository.transition(session, method.job_id, method.attempt, conclusion.status, **conclusion.fields):
        return None
    return conclusion.status


def settle_in_session(session: Session, job_id: str) -> JobStatus | None:
    """`settle` inside a request's transaction, for an arm the API has just ended (a cancelled control): no
    comparison is needed then. A succeeded control is left to its worker and the sweeper."""
    method_id = repository.method_job_of(session, job_id)
    pair = repository.control_pair(session, method_id, lock=True) if method_id else None
    if pair is None or not ready(pair) or pair.control.status is S.succeeded:
        return None
    return apply(session, pair.method.job_id, conclude_from(pair, None))
