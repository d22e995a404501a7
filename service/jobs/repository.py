"""Every query on jobs and their events, metrics and checkpoints.

API reads go through `scoped()` (the tenant filter). The lease/fencing helpers below them are for the worker:
`attempt` is the fencing token, incremented by every claim, and every worker write is conditional on it, so
a stale worker (its lease expired and the job was claimed again) changes nothing. None of these commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, defer

from lingudistill.checkpoint import checkpoint_name
from lingudistill.spec import JobSpec
from service.auth import Principal, scoped
from service.lifecycle import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LEASED_STATUSES,
    NOT_FINAL_STATUSES,
    WAITING_STATUSES,
    FailureReason,
    JobStatus,
    predecessors,
)
from service.models import Checkpoint, Job, JobEvent, Metric, Tenant, utcnow
from service.pagination import Page, newest_first, page_of

S = JobStatus
_NOT_FINAL = [s.value for s in NOT_FINAL_STATUSES]
_COUNTED = [s.value for s in NOT_FINAL_STATUSES - WAITING_STATUSES]  # against the tenant's active-job limit
_UNLEASED = [S.queued, S.paused, *WAITING_STATUSES]  # not final, and no worker to stop: a cancel ends them at once


@dataclass(frozen=True)
class JobFilters:
    statuses: Sequence[JobStatus] = ()
    name: str | None = None
    metadata: dict[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


# --- API reads ----------------------------------------------------------------------------------------------


def get_job(session: Session, principal: Principal, job_id: str) -> Job | None:
    return session.scalar(scoped(select(Job), Job, principal).where(Job.id == job_id))


def add_job(session: Session, job: Job) -> Job:
    session.add(job)
    session.flush()
    return job


def list_jobs(
    session: Session,
    principal: Principal,
    filters: JobFilters,
    limit: int,
    after: str | None,
    with_spec: bool = True,
) -> Page[Job]:
    """Newest first, a keyset page. Without `with_spec` the spec column (about 1.5 KB of JSON a job) is not read,
    and touching it raises rather than loading it row by row."""
    stmt = scoped(select(Job), Job, principal).where(*_filter_clauses(filters))
    if not with_spec:
        stmt = stmt.options(defer(Job.spec, raiseload=True))
    return page_of(session.scalars(newest_first(stmt, Job, limit, after)).all(), limit)


def _filter_clauses(filters: JobFilters) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.statuses:
        clauses.append(Job.status.in_(filters.statuses))
    if filters.name:
        clauses.append(Job.name == filters.name)
    for key, value in (filters.metadata or {}).items():
        clauses.append(Job.meta[key].as_string() == value)
    if filters.created_after:
        clauses.append(Job.created_at >= filters.created_after)
    if filters.created_before:
        clauses.append(Job.created_at < filters.created_before)
    return clauses


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Hold the tenant's row until commit, so dispatch decisions of one tenant (count, then insert) run one at a time
    and its job limit holds under concurrent creates. Postgres: a row lock. SQLite: a no-op write, which takes the
    database's write lock at once (a plain SELECT would let two requests count before either inserts)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    else:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(max_active_jobs=Tenant.max_active_jobs))


def count_active_dispatched(session: Session, tenant_id: str, cap: int | None = None) -> int:
    """Jobs counted against the tenant limit: dispatched and neither final nor waiting (a job waiting for its
    control arm holds no worker; the control counts) (counting stops at `cap`)."""
    rows = select(Job.id).where(Job.tenant_id == tenant_id, Job.status.in_(_COUNTED), Job.dispatched_at.is_not(None))
    if cap is not None:
        rows = rows.limit(cap)
    return session.scalar(select(func.count()).select_from(rows.subquery())) or 0


def tenant_max_active_jobs(session: Session, tenant_id: str) -> int | None:
    return session.scalar(select(Tenant.max_active_jobs).where(Tenant.id == tenant_id))


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {str(status.value if isinstance(status, JobStatus) else status): n for status, n in rows}


def last_complete_checkpoint_step(session: Session, job_id: str) -> int | None:
    stmt = select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id, Checkpoint.complete.is_(True))
    return session.scalar(stmt)


def list_events(session: Session, job_id: str, after: int | None, limit: int) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        stmt = stmt.where(JobEvent.id > after)
    return list(session.scalars(stmt.order_by(JobEvent.id).limit(limit)))


def list_metrics(
    session: Session, job_id: str, names: Sequence[str], step_min: int | None, step_max: int | None
) -> list[tuple[str, int, float]]:
    stmt = select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job_id)
    if names:
        stmt = stmt.where(Metric.name.in_(names))
    if step_min is not None:
        stmt = stmt.where(Metric.step >= step_min)
    if step_max is not None:
        stmt = stmt.where(Metric.step <= step_max)
    return [(n, s, v) for n, s, v in session.execute(stmt.order_by(Metric.name, Metric.step))]


def list_complete_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.complete.is_(True))
    return list(session.scalars(stmt.order_by(Checkpoint.step)))


def get_complete_checkpoint(session: Session, job_id: str, step: int) -> Checkpoint | None:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step, Checkpoint.complete.is_(True))
    return session.scalar(stmt)


def cancel_queued(session: Session, job_id: str) -> bool:
    """queued, paused or waiting for its control arm (no worker holds it) -> cancelled at once, unless a worker
    claimed it meanwhile."""
    now = utcnow()
    values = {
        "status": S.cancelled,
        "cancel_requested_at": now,
        "finished_at": now,
        "failure_reason": FailureReason.cancelled,
        "held_reason": None,
    }
    return _update(session, [Job.id == job_id, Job.status.in_(_UNLEASED)], values)


def request_cancel(session: Session, job_id: str) -> bool:
    """An active or pausing job -> cancelling; its worker sees the request at its next heartbeat and stops."""
    values = {"status": S.cancelling, "cancel_requested_at": utcnow()}
    return _update(session, [Job.id == job_id, Job.status.in_([*ACTIVE_STATUSES, S.pausing])], values)


def _queued_values(dispatch: bool) -> dict[str, Any]:
    """Back in the queue: dispatched now, or held by the tenant's limit of active jobs."""
    return {
        "status": S.queued,
        "lease_owner": None,
        "lease_expires_at": None,
        "dispatched_at": utcnow() if dispatch else None,
        "held_reason": None if dispatch else "tenant_limit",
    }


def requeue_for_retry(session: Session, job_id: str, max_attempts: int, dispatch: bool) -> bool:
    """failed/cancelled -> queued; the attempt number is kept (the next claim increments it)."""
    values = {
        **_queued_values(dispatch),
        "resume_checkpoint_step": last_complete_checkpoint_step(session, job_id),
        "failure_reason": None,
        "failure_message": None,
        "finished_at": None,
        "cancel_requested_at": None,
        "max_attempts": max_attempts,
    }
    return _update(session, [Job.id == job_id, Job.status.in_([S.failed, S.cancelled])], values)


# --- pause and resume ---------------------------------------------------------------------------------------------
# A paused job holds no lease and no tenant slot (dispatched_at is cleared, so the tenant limit does not count it);
# resume_checkpoint_step names the checkpoint the next claim resumes from. The paused attempt is given back
# (max_attempts + 1): attempt stays the fencing token, incremented by every claim, and a pause spends no retry.


def pause_queued(session: Session, job_id: str) -> bool:
    """queued -> paused at once (held: not dispatched), unless a worker claimed it meanwhile. A wake-up already in
    the broker finds it unclaimable and is dropped; resume sends a new one."""
    values = {"status": S.paused, "dispatched_at": None, "held_reason": None}
    return _update(session, [Job.id == job_id, Job.status == S.queued], values)


def request_pause(session: Session, job_id: str) -> bool:
    """validating/running -> pausing; its worker sees the request at its next state poll and has the child save a
    checkpoint at the next step boundary."""
    return _update(session, [Job.id == job_id, Job.status.in_([S.validating, S.running])], {"status": S.pausing})


@dataclass(frozen=True)
class PauseOutcome:
    status: JobStatus  # paused, or failed when the pause's checkpoint was not written
    step: int | None  # the checkpoint the job resumes from


def finish_pause(session: Session, job_id: str, attempt: int, stopped_at: int) -> PauseOutcome | None:
    """pausing -> paused once the child stopped at step `stopped_at` and its checkpoint there is complete; pausing ->
    failed (infrastructure) when that checkpoint is missing. None: the job is no longer this attempt's, or no longer
    pausing (a cancel came first)."""
    step = last_complete_checkpoint_step(session, job_id)
    if stopped_at > (step or 0):
        message = f"the pause's checkpoint at step {stopped_at} could not be written; a retry resumes from " + (
            f"step {step}" if step is not None else "the first step"
        )
        fields = {"failure_reason": FailureReason.infrastructure, "failure_message": message}
        return PauseOutcome(S.failed, step) if transition(session, job_id, attempt, S.failed, **fields) else None
    return PauseOutcome(S.paused, step) if _to_paused(session, job_id, attempt, step) else None


def _to_paused(session: Session, job_id: str, attempt: int, step: int | None) -> bool:
    values = {
        "status": S.paused,
        "resume_checkpoint_step": step,
        "lease_owner": None,
        "lease_expires_at": None,
        "dispatched_at": None,
        "held_reason": None,
        "max_attempts": Job.max_attempts + 1,
    }
    if not _update(session, [Job.id == job_id, Job.attempt == attempt, Job.status == S.pausing], values):
        return False
    checkpoint = None if step is None else checkpoint_name(step)
    append_event(session, job_id, attempt, "status", {"status": S.paused.value, "step": step, "checkpoint": checkpoint})
    return True


def resume_paused(session: Session, job_id: str, dispatch: bool) -> bool:
    """paused -> queued, to resume from the pause's checkpoint (resume_checkpoint_step, set by the pause)."""
    return _update(session, [Job.id == job_id, Job.status == S.paused], _queued_values(dispatch))


def _update(session: Session, where: list[ColumnElement[bool]], values: dict[str, Any]) -> bool:
    stmt = update(Job).where(*where).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


# --- worker: leases, fencing, progress ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    tenant_id: str
    attempt: int  # the fencing token: pass it to every write below
    spec: JobSpec
    resume_checkpoint_step: int | None
    lease_expires_at: datetime
    control_job_id: str | None = None  # evaluation.control: the run ends in comparing, not succeeded


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    attempt: int
    cancel_requested: bool


@dataclass(frozen=True)
class ExpiredLease:
    job_id: str
    attempt: int
    status: JobStatus


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    queue: str
    priority: int
    dispatched_at: datetime | None = None  # when its wake-up was last sent (find_unsent_queued fills it)


def claim_job(session: Session, job_id: str, worker_id: str, lease_s: float) -> ClaimedJob | None:
    """Take the lease on a dispatched queued job: status -> validating, attempt += 1. None if someone else has it.

    Postgres: the row is locked with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers skip it at once.
    SQLite has a single writer, so the conditional UPDATE alone is atomic there. Commit right after.
    """
    claimable = [
        Job.id == job_id,
        Job.status == S.queued,
        Job.dispatched_at.is_not(None),
        Job.cancel_requested_at.is_(None),
    ]
    if session.get_bind().dialect.name == "postgresql":
        locked = session.scalar(select(Job.id).where(*claimable).with_for_update(skip_locked=True))
        if locked is None:
            return None
    now = utcnow()
    expires = now + timedelta(seconds=lease_s)
    stmt = (
        update(Job)
        .where(*claimable)
        .values(
            status=S.validating,
            attempt=Job.attempt + 1,
            lease_owner=worker_id,
            lease_expires_at=expires,
            heartbeat_at=now,
            started_at=now,
            held_reason=None,
        )
        .returning(Job.attempt, Job.tenant_id, Job.spec, Job.resume_checkpoint_step, Job.control_job_id)
        .execution_options(synchronize_session=False)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    append_event(session, job_id, row.attempt, "status", {"status": S.validating.value, "worker": worker_id})
    spec = JobSpec.model_validate(row.spec)
    return ClaimedJob(job_id, row.tenant_id, row.attempt, spec, row.resume_checkpoint_step, expires, row.control_job_id)


def renew_lease(session: Session, job_id: str, attempt: int, worker_id: str, lease_s: float) -> bool:
    """Extend the lease (the heartbeat). False: the lease is lost, stop working on the job."""
    now = utcnow()
    where = [Job.id == job_id, Job.attempt == attempt, Job.lease_owner == worker_id, Job.status.in_(_NOT_FINAL)]
    return _update(session, where, {"lease_expires_at": now + timedelta(seconds=lease_s), "heartbeat_at": now})


def get_job_state(session: Session, job_id: str) -> JobState | None:
    row = session.execute(select(Job.status, Job.attempt, Job.cancel_requested_at).where(Job.id == job_id)).first()
    if row is None:
        return None
    return JobState(JobStatus(row.status), row.attempt, row.cancel_requested_at is not None)


_TRANSITION_FIELDS = {"failure_reason", "failure_message", "step", "total_steps", "report", "resume_checkpoint_step"}


def transition(session: Session, job_id: str, attempt: int, to_status: JobStatus, **fields: Any) -> bool:
    """Move the job to `to_status` if the move is allowed and `attempt` is current; also logs a status event.

    A final status releases the lease and sets finished_at; a waiting one (comparing) releases the lease. Extra
    fields: failure_reason, failure_message, step, total_steps, report, resume_checkpoint_step.
    """
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"transition() cannot set {sorted(unknown)}")
    values: dict[str, Any] = {"status": to_status, **fields}
    if to_status in FINAL_STATUSES:
        values.update(finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
    elif to_status in WAITING_STATUSES:
        values.update(lease_owner=None, lease_expires_at=None)
    allowed_from = list(predecessors(to_status))
    if not _update(session, [Job.id == job_id, Job.attempt == attempt, Job.status.in_(allowed_from)], values):
        return False
    data = {"status": to_status.value} | {k: _plain(v) for k, v in fields.items() if k != "report"}
    append_event(session, job_id, attempt, "status", data)
    return True


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, JobStatus | FailureReason) else value


def update_progress(
    session: Session,
    job_id: str,
    attempt: int,
    *,
    step: int,
    total_steps: int | None = None,
    tokens_per_s: float | None = None,
    step_time_s: float | None = None,
    latest_metrics: dict[str, Any] | None = None,
) -> bool:
    values: dict[str, Any] = {"step": step}
    optional = {
        "total_steps": total_steps,
        "tokens_per_s": tokens_per_s,
        "step_time_s": step_time_s,
        "latest_metrics": latest_metrics,
    }
    values.update({k: v for k, v in optional.items() if v is not None})
    return _update(session, [Job.id == job_id, Job.attempt == attempt, Job.status.in_(_NOT_FINAL)], values)


def _holds_attempt(session: Session, job_id: str, attempt: int) -> bool:
    """Lock the job row (Postgres) and check the fencing token, so a concurrent claim waits for this write."""
    current = session.scalar(select(Job.attempt).where(Job.id == job_id).with_for_update())
    return current == attempt


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def record_metrics(session: Session, job_id: str, attempt: int, rows: Iterable[tuple[int, str, float]]) -> int:
    """Upsert (step, name, value) rows in one statement; a resumed attempt overwrites steps after its checkpoint.

    Returns the number of rows written (0 when `attempt` is stale).
    """
    values = [{"job_id": job_id, "attempt": attempt, "step": s, "name": n, "value": float(v)} for s, n, v in rows]
    if not values or not _holds_attempt(session, job_id, attempt):
        return 0
    stmt = _insert(session)(Metric).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "step", "name"],
        set_={"value": stmt.excluded.value, "attempt": stmt.excluded.attempt},
    )
    session.execute(stmt)
    return len(values)


def append_event(session: Session, job_id: str, attempt: int, type: str, data: dict[str, Any]) -> int | None:
    """Add an event to the job's log; returns its id (the SSE event id), or None when `attempt` is stale (fenced)."""
    if not _holds_attempt(session, job_id, attempt):
        return None
    event = JobEvent(job_id=job_id, attempt=attempt, type=type, data=data)
    session.add(event)
    session.flush()
    return event.id


def record_checkpoint(
    session: Session,
    job_id: str,
    attempt: int,
    *,
    step: int,
    storage_prefix: str,
    manifest: dict[str, str],
    size_bytes: int,
    metrics: dict[str, Any] | None = None,
    complete: bool = True,
) -> bool:
    """Upsert the checkpoint at `step`; call it with complete=True once every file and the manifest are uploaded."""
    if not _holds_attempt(session, job_id, attempt):
        return False
    row = {
        "job_id": job_id,
        "attempt": attempt,
        "step": step,
        "storage_prefix": storage_prefix,
        "manifest": manifest,
        "size_bytes": size_bytes,
        "metrics": metrics or {},
        "complete": complete,
        "created_at": utcnow(),
    }
    stmt = _insert(session)(Checkpoint).values(row)
    stmt = stmt.on_conflict_do_update(index_elements=["job_id", "step"], set_={k: stmt.excluded[k] for k in row})
    session.execute(stmt)
    if complete:
        append_event(session, job_id, attempt, "checkpoint", {"step": step, "size_bytes": size_bytes})
    return True


def set_report(session: Session, job_id: str, attempt: int, report: dict[str, Any]) -> bool:
    return _update(session, [Job.id == job_id, Job.attempt == attempt], {"report": report})


# --- a job and its control arm (evaluation.control; service.jobs.control) --------------------------------------


@dataclass(frozen=True)
class ArmState:
    job_id: str
    status: JobStatus
    attempt: int
    failure_reason: FailureReason | None
    failure_message: str | None


@dataclass(frozen=True)
class ControlPair:
    method: ArmState
    control: ArmState


def _arm_state(session: Session, job_id: str, lock: bool = False) -> ArmState | None:
    columns = (Job.id, Job.status, Job.attempt, Job.failure_reason, Job.failure_message)
    stmt = select(*columns).where(Job.id == job_id)
    row = session.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None:
        return None
    reason = FailureReason(row.failure_reason) if row.failure_reason else None
    return ArmState(row.id, JobStatus(row.status), row.attempt, reason, row.failure_message)


def method_job_of(session: Session, job_id: str) -> str | None:
    """The method job of a pair that `job_id` belongs to (either arm); None for a job without a control."""
    row = session.execute(select(Job.control_job_id, Job.control_of).where(Job.id == job_id)).first()
    if row is None or (row.control_job_id is None and row.control_of is None):
        return None
    return job_id if row.control_job_id is not None else row.control_of


def control_pair(session: Session, method_job_id: str, lock: bool = False) -> ControlPair | None:
    """Both arms' states. With `lock`, the method's row is held until commit (Postgres: SELECT ... FOR UPDATE; SQLite:
    a no-op write takes the database's write lock first), so the arms that finish concurrently conclude it once."""
    if lock and session.get_bind().dialect.name != "postgresql":
        _update(session, [Job.id == method_job_id], {"control_job_id": Job.control_job_id})
    control_id = session.scalar(select(Job.control_job_id).where(Job.id == method_job_id))
    method = _arm_state(session, method_job_id, lock)
    control = _arm_state(session, control_id) if control_id else None
    return None if method is None or control is None else ControlPair(method, control)


def waiting_for_final_control(session: Session, limit: int = 100) -> list[str]:
    """Method jobs still comparing although their control arm is final: the arm that finished last did not
    conclude them (its process died, or the API cancelled a queued control). The sweeper concludes them."""
    control = aliased(Job)
    stmt = (
        select(Job.id)
        .join(control, control.id == Job.control_job_id)
        .where(Job.status.in_(list(WAITING_STATUSES)), control.status.in_(list(FINAL_STATUSES)))
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# --- worker: the sweeper ----------------------------------------------------------------------------------------


def find_expired_leases(session: Session, now: datetime | None = None, limit: int = 100) -> list[ExpiredLease]:
    stmt = (
        select(Job.id, Job.attempt, Job.status)
        .where(Job.status.in_(list(LEASED_STATUSES)), Job.lease_expires_at < (now or utcnow()))
        .order_by(Job.lease_expires_at)
        .limit(limit)
    )
    return [ExpiredLease(r.id, r.attempt, JobStatus(r.status)) for r in session.execute(stmt)]


def requeue_expired(session: Session, job_id: str, attempt: int, now: datetime | None = None) -> JobStatus | None:
    """Heal a job whose worker vanished (its lease expired): see `_requeue_or_end`. Returns the new status (None:
    nothing changed). When it is queued, send get_wakeup(...) after the commit."""
    now = now or utcnow()
    where = [Job.id == job_id, Job.attempt == attempt, Job.lease_expires_at < now]
    message = f"the worker stopped heartbeating (attempt {attempt})"
    return _requeue_or_end(session, job_id, attempt, where, message, now)


def requeue_failed_attempt(session: Session, job_id: str, attempt: int, message: str) -> JobStatus | None:
    """An attempt failed for an infrastructure reason while its worker held the lease: see `_requeue_or_end`."""
    where = [Job.id == job_id, Job.attempt == attempt, Job.status.in_(list(LEASED_STATUSES))]
    event = {"reason": "infrastructure", "message": message}
    return _requeue_or_end(session, job_id, attempt, where, message, utcnow(), event)


def _requeue_or_end(
    session: Session,
    job_id: str,
    attempt: int,
    where: list[ColumnElement[bool]],
    message: str,
    now: datetime,
    failed_event: dict[str, Any] | None = None,
) -> JobStatus | None:
    """cancelling -> cancelled; pausing -> paused (the pause is honoured, from the last complete checkpoint); out of
    attempts -> failed (infrastructure); else -> queued, to resume from the last complete checkpoint, lease released
    and marked dispatched. `failed_event` is logged as attempt_failed."""
    row = session.execute(select(Job.status, Job.max_attempts).where(*where).with_for_update()).first()
    if row is None:
        return None
    if failed_event is not None:
        append_event(session, job_id, attempt, "attempt_failed", failed_event)
    status = JobStatus(row.status)
    if status is S.pausing:
        step = last_complete_checkpoint_step(session, job_id)
        return S.paused if _to_paused(session, job_id, attempt, step) else None
    if status is S.cancelling:
        target, fields = S.cancelled, {"failure_reason": FailureReason.cancelled}
    elif attempt >= row.max_attempts:
        message = f"{message} (gave up after {attempt} attempts)"
        target, fields = S.failed, {"failure_reason": FailureReason.infrastructure, "failure_message": message}
    else:
        target, fields = S.queued, {"resume_checkpoint_step": last_complete_checkpoint_step(session, job_id)}
    if not transition(session, job_id, attempt, target, **fields):
        return None
    if target is S.queued:
        _update(session, [Job.id == job_id], {"lease_owner": None, "lease_expires_at": None, "dispatched_at": now})
    return target


def get_wakeup(session: Session, job_id: str) -> QueuedJob | None:
    """What to send to the broker for a queued, dispatched job (None otherwise)."""
    stmt = select(Job.id, Job.queue, Job.priority).where(
        Job.id == job_id, Job.status == S.queued, Job.held_reason.is_(None)
    )
    row = session.execute(stmt).first()
    return QueuedJob(row.id, row.queue, row.priority) if row else None


def find_unsent_queued(
    session: Session, older_than_s: float, now: datetime | None = None, limit: int = 100
) -> list[QueuedJob]:
    """Dispatched queued jobs unclaimed `older_than_s` after their wake-up was sent: it may have been lost. Re-send
    those the broker no longer holds, each after `claim_resend`."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = (
        select(Job.id, Job.queue, Job.priority, Job.dispatched_at)
        .where(Job.status == S.queued, Job.held_reason.is_(None), Job.dispatched_at < cutoff)
        .order_by(Job.dispatched_at)
        .limit(limit)
    )
    return [QueuedJob(r.id, r.queue, r.priority, r.dispatched_at) for r in session.execute(stmt)]


def claim_resend(session: Session, job: QueuedJob, now: datetime | None = None) -> bool:
    """Take the right to re-send `job`'s wake-up: True for exactly one of several concurrent sweepers, and only
    while the job is still queued and unsent since `find_unsent_queued` saw it (no worker claimed it meanwhile)."""
    where = [Job.id == job.job_id, Job.status == S.queued, Job.held_reason.is_(None)]
    return _update(session, [*where, Job.dispatched_at == job.dispatched_at], {"dispatched_at": now or utcnow()})


def mark_dispatched(session: Session, job_ids: Sequence[str], now: datetime | None = None) -> None:
    if job_ids:
        _update_many(session, job_ids, {"dispatched_at": now or utcnow(), "held_reason": None})


def _update_many(session: Session, job_ids: Sequence[str], values: dict[str, Any]) -> None:
    stmt = update(Job).where(Job.id.in_(job_ids)).values(**values).execution_options(synchronize_session=False)
    session.execute(stmt)


def tenant_job_limits(session: Session, default_limit: int) -> dict[str, int]:
    """Per-tenant limit of active jobs for every tenant with held jobs."""
    stmt = select(Tenant.id, func.coalesce(Tenant.max_active_jobs, default_limit)).where(
        Tenant.id.in_(select(Job.tenant_id).where(Job.status == S.queued, Job.held_reason.is_not(None)))
    )
    return {tenant_id: limit for tenant_id, limit in session.execute(stmt)}


def dispatchable_held_jobs(session: Session, default_limit: int, per_tenant: int = 100) -> list[QueuedJob]:
    """Held jobs that their tenant's limit now lets through, most urgent first. mark_dispatched them, commit,
    then send them."""
    released: list[QueuedJob] = []
    for tenant_id, limit in tenant_job_limits(session, default_limit).items():
        lock_tenant(session, tenant_id)  # a concurrent create must not dispatch into the same free slot
        free = min(limit - count_active_dispatched(session, tenant_id, cap=limit), per_tenant)
        if free <= 0:
            continue
        stmt = (
            select(Job.id, Job.queue, Job.priority)
            .where(Job.tenant_id == tenant_id, Job.status == S.queued, Job.held_reason.is_not(None))
            .order_by(Job.priority.desc(), Job.created_at, Job.id)
            .limit(free)
            .with_for_update(skip_locked=True)
        )
        released += [QueuedJob(r.id, r.queue, r.priority) for r in session.execute(stmt)]
    return released


# --- queue position and estimated start (issue 15) ------------------------------------------------------------
# The broker decides the order, so the position follows it: with Redis each queue is served by priority, then in
# the order the wake-ups were sent (dispatched_at); the embedded broker is one first-in-first-out queue for every
# job, whatever its spec names. `queue=None` means that single queue.


@dataclass(frozen=True)
class QueueAhead:
    total: int  # dispatched queued jobs the broker hands out before this one (every tenant's: a count only)
    own: int  # of which this job's tenant's


def queue_ahead(session: Session, job: Job, queue: str | None, by_priority: bool) -> QueueAhead:
    waiting = [Job.status == S.queued, Job.dispatched_at.is_not(None), Job.id != job.id]
    if queue is not None:
        waiting.append(Job.queue == queue)
    if job.dispatched_at is not None:  # a held job is behind every dispatched one
        sent_before = or_(
            Job.dispatched_at < job.dispatched_at, and_(Job.dispatched_at == job.dispatched_at, Job.id < job.id)
        )
        ahead = or_(Job.priority > job.priority, and_(Job.priority == job.priority, sent_before))
        waiting.append(ahead if by_priority else sent_before)
    own = func.sum(case((Job.tenant_id == job.tenant_id, 1), else_=0))
    total, mine = session.execute(select(func.count(), own).where(*waiting)).one()
    return QueueAhead(total=total or 0, own=mine or 0)


@dataclass(frozen=True)
class RunningJob:
    started_at: datetime | None
    step: int | None
    total_steps: int | None
    step_time_s: float | None


def running_jobs(session: Session, queue: str | None) -> list[RunningJob]:
    """Jobs holding a worker slot on `queue` (None: any), for how soon a slot frees up."""
    stmt = select(Job.started_at, Job.step, Job.total_steps, Job.step_time_s).where(
        Job.status.in_(list(LEASED_STATUSES))
    )
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    return [RunningJob(*row) for row in session.execute(stmt.limit(1000))]


def recent_run_durations(session: Session, queue: str | None, limit: int = 20) -> list[float]:
    """Seconds from start to end of the last `limit` succeeded jobs on `queue` (None: any)."""
    stmt = select(Job.started_at, Job.finished_at).where(
        Job.status == S.succeeded, Job.started_at.is_not(None), Job.finished_at.is_not(None)
    )
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    rows = session.execute(stmt.order_by(Job.finished_at.desc()).limit(limit))
    return [max((_aware(end) - _aware(start)).total_seconds(), 0.0) for start, end in rows]


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
