"""Job use cases. No commits here: the request's session commits, then buffered wake-ups are sent."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from lingudistill.evaluation.compare import control_spec
from lingudistill.spec import JobSpec
from service.auth import Principal
from service.datasets import repository as datasets_repository
from service.dispatch import DispatchBuffer, broker_honours_priority, broker_queue
from service.errors import (
    CheckpointNotFound,
    InvalidTransition,
    JobNotFound,
    ModelNotReady,
    ReportNotReady,
    UriNotAllowed,
)
from service.jobs import control as control_arm
from service.jobs import repository
from service.jobs.schemas import (
    CheckpointFile,
    CheckpointList,
    CheckpointOut,
    JobLinks,
    JobOut,
    MetricPoint,
    MetricSeries,
    ModelOut,
    Progress,
    QueueInfo,
)
from service.lifecycle import ACTIVE_STATUSES, FINAL_STATUSES, PAUSABLE_STATUSES, RESUMABLE_STATUSES, JobStatus
from service.models import Checkpoint, Job, utcnow
from service.redact import redact_paths
from service.settings import Settings
from service.storage import Storage, clean_key
from service.storage_layout import model_manifest_key, model_prefix
from service.uri_policy import DatasetRef, UriPolicy


def load_job(session: Session, principal: Principal, job_id: str) -> Job:
    job = repository.get_job(session, principal, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def check_uris(session: Session, principal: Principal, spec: JobSpec, settings: Settings) -> None:
    def find_dataset(dataset_id: str) -> DatasetRef | None:
        dataset = datasets_repository.get_dataset_locked(session, principal, dataset_id, exclusive=False)
        return None if dataset is None else DatasetRef(kind=dataset.kind, status=dataset.status)

    errors = UriPolicy(settings, find_dataset).violations(spec)
    if errors:
        raise UriNotAllowed(f"{len(errors)} URI(s) refused by the URI policy", errors=errors)


def tenant_limit(session: Session, tenant_id: str, settings: Settings) -> int:
    return repository.tenant_max_active_jobs(session, tenant_id) or settings.max_active_jobs_per_tenant


def _may_dispatch(session: Session, principal: Principal, tenant_id: str, settings: Settings) -> bool:
    repository.lock_tenant(session, tenant_id)  # until commit: concurrent creates count one after another
    if principal.tenant_id == tenant_id and not principal.is_admin:
        limit = principal.max_active_jobs or settings.max_active_jobs_per_tenant
    else:
        limit = tenant_limit(session, tenant_id, settings)
    return repository.count_active_dispatched(session, tenant_id, cap=limit) < limit


def create_job(
    session: Session, principal: Principal, spec: JobSpec, settings: Settings, buffer: DispatchBuffer
) -> Job:
    """The job, queued; with evaluation.control also its control arm (service.jobs.control), in the same
    transaction and from the same resolved spec (so the same seed and data order). Each arm is one job against the
    tenant's limit while it is queued or running, dispatched or held on its own."""
    check_uris(session, principal, spec, settings)
    resolved = spec.resolved()
    job = _queue_job(session, principal, resolved, settings, buffer)
    if resolved.evaluation.control:
        control = _queue_job(session, principal, control_spec(resolved), settings, buffer, control_of=job.id)
        job.control_job_id = control.id
        session.flush()
    return job


def _queue_job(
    session: Session,
    principal: Principal,
    resolved: JobSpec,
    settings: Settings,
    buffer: DispatchBuffer,
    control_of: str | None = None,
) -> Job:
    dispatch = _may_dispatch(session, principal, principal.tenant_id, settings)
    now = utcnow()
    job = Job(
        tenant_id=principal.tenant_id,
        name=resolved.name,
        status=JobStatus.queued,
        spec=resolved.model_dump(mode="json"),
        priority=resolved.resources.priority,
        queue=resolved.resources.queue,
        attempt=0,
        max_attempts=settings.max_attempts,
        meta=dict(resolved.metadata),
        total_steps=resolved.training.max_steps,
        created_at=now,
        updated_at=now,
        dispatched_at=now if dispatch else None,
        held_reason=None if dispatch else "tenant_limit",
        control_of=control_of,
    )
    repository.add_job(session, job)
    if dispatch:
        buffer.add(job.id, job.queue, job.priority)
    event = {"status": "queued", "held": not dispatch} | ({"control_of": control_of} if control_of else {})
    repository.append_event(session, job.id, 0, "status", event)
    return job


def cancel_job(session: Session, principal: Principal, job_id: str) -> Job:
    """Cancel the job; a job's control arm is cancelled with it. Cancelling a control arm alone fails its method
    job once that is waiting for it (service.jobs.control)."""
    job = load_job(session, principal, job_id)
    if job.status in (JobStatus.cancelling, JobStatus.cancelled):
        return job
    if job.status in FINAL_STATUSES:
        raise InvalidTransition(f"a {job.status.value} job cannot be cancelled")
    _cancel(session, job)
    control = _control_of(session, principal, job)
    if control is not None and control.status not in FINAL_STATUSES | {JobStatus.cancelling}:
        _cancel(session, control)
    if job.control_of is not None:
        control_arm.settle_in_session(session, job.id)
    session.refresh(job)
    return job


def _cancel(session: Session, job: Job) -> None:
    if repository.cancel_queued(session, job.id):
        repository.append_event(session, job.id, job.attempt, "status", {"status": "cancelled", "by": "user"})
    elif repository.request_cancel(session, job.id):
        repository.append_event(session, job.id, job.attempt, "status", {"status": "cancelling", "by": "user"})


def _control_of(session: Session, principal: Principal, job: Job) -> Job | None:
    return None if job.control_job_id is None else repository.get_job(session, principal, job.control_job_id)


def retry_job(session: Session, principal: Principal, job_id: str, settings: Settings, buffer: DispatchBuffer) -> Job:
    """A new attempt of a failed or cancelled job; a job's control arm is retried with it when it failed or was
    cancelled too (a succeeded control is kept: the lift is computed again when the job's run ends)."""
    job = load_job(session, principal, job_id)
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        raise InvalidTransition(f"only failed or cancelled jobs can be retried; this one is {job.status.value}")
    _retry(session, principal, job, settings, buffer)
    control = _control_of(session, principal, job)
    if control is not None and control.status in (JobStatus.failed, JobStatus.cancelled):
        _retry(session, principal, control, settings, buffer)
    return job


def _retry(session: Session, principal: Principal, job: Job, settings: Settings, buffer: DispatchBuffer) -> Job:
    max_attempts = job.attempt + settings.max_attempts  # a retry gets a fresh budget of attempts

    def requeue(session: Session, job_id: str, dispatch: bool) -> bool:
        return repository.requeue_for_retry(session, job_id, max_attempts, dispatch)

    return _requeue(session, principal, job, settings, buffer, "retry", requeue)


def pause_job(session: Session, principal: Principal, job_id: str) -> Job:
    """queued: paused at once (held); validating/running: pausing, then paused by the worker once the child saved a
    checkpoint at its next step boundary. A pausing or paused job is answered unchanged."""
    job = load_job(session, principal, job_id)
    if job.status in (JobStatus.pausing, JobStatus.paused):
        return job
    if job.status not in PAUSABLE_STATUSES:
        raise InvalidTransition(f"only {_names(PAUSABLE_STATUSES)} jobs can be paused; this one is {job.status.value}")
    if repository.pause_queued(session, job.id):
        repository.append_event(session, job.id, job.attempt, "status", {"status": "paused", "by": "user"})
    elif repository.request_pause(session, job.id):
        repository.append_event(session, job.id, job.attempt, "status", {"status": "pausing", "by": "user"})
    else:
        raise InvalidTransition("the job changed state meanwhile and cannot be paused now")
    session.refresh(job)
    return job


def resume_job(session: Session, principal: Principal, job_id: str, settings: Settings, buffer: DispatchBuffer) -> Job:
    """paused -> queued, to resume from the checkpoint the pause saved (the next claim restores it)."""
    job = load_job(session, principal, job_id)
    if job.status not in RESUMABLE_STATUSES:
        raise InvalidTransition(f"only a paused job can be resumed; this one is {job.status.value}")
    return _requeue(session, principal, job, settings, buffer, "resumed", repository.resume_paused)


def _names(statuses: frozenset[JobStatus]) -> str:
    names = [s.value for s in JobStatus if s in statuses]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _requeue(
    session: Session,
    principal: Principal,
    job: Job,
    settings: Settings,
    buffer: DispatchBuffer,
    why: str,
    requeue: Callable[[Session, str, bool], bool],
) -> Job:
    """Back to queued (a retry or a resume), dispatched now or held by the tenant's limit of active jobs."""
    check_uris(session, principal, JobSpec.model_validate(job.spec), settings)  # a dataset may be gone since
    dispatch = _may_dispatch(session, principal, job.tenant_id, settings)
    if not requeue(session, job.id, dispatch):
        raise InvalidTransition("the job changed state meanwhile")
    session.refresh(job)
    data = {"status": "queued", why: True, "resume_from_step": job.resume_checkpoint_step, "held": not dispatch}
    repository.append_event(session, job.id, job.attempt, "status", data)
    if dispatch:
        buffer.add(job.id, job.queue, job.priority)
    return job


def get_report(session: Session, principal: Principal, job_id: str) -> dict[str, Any]:
    job = load_job(session, principal, job_id)
    if job.report is None:
        raise ReportNotReady(f"job {job_id} has no report yet (status {job.status.value})")
    return job.report


# --- views --------------------------------------------------------------------------------------------------


def job_links(job_id: str) -> JobLinks:
    base = f"/v1/jobs/{job_id}"
    return JobLinks(
        self=base,
        events=f"{base}/events",
        metrics=f"{base}/metrics",
        checkpoints=f"{base}/checkpoints",
        report=f"{base}/report",
        cancel=f"{base}/cancel",
        retry=f"{base}/retry",
        pause=f"{base}/pause",
        resume=f"{base}/resume",
    )


def progress_of(job: Job) -> Progress:
    percent = eta = None
    if job.step is not None and job.total_steps:
        percent = round(100.0 * job.step / job.total_steps, 2)
        if job.step_time_s and job.status in ACTIVE_STATUSES:
            eta = round(max(job.total_steps - job.step, 0) * job.step_time_s, 1)
    return Progress(
        step=job.step,
        total_steps=job.total_steps,
        percent=percent,
        eta_s=eta,
        tokens_per_s=job.tokens_per_s,
        step_time_s=job.step_time_s,
        latest_metrics=job.latest_metrics,
        attempt=job.attempt,
    )


def queue_info_of(session: Session, job: Job, settings: Settings) -> QueueInfo | None:
    if job.status is not JobStatus.queued:
        return None
    queue = broker_queue(settings, job.queue)
    shared = None if queue != job.queue else queue  # the embedded broker's one queue holds every job
    by_priority = broker_honours_priority(settings)
    ahead = repository.queue_ahead(session, job, shared, by_priority)
    wait = estimated_wait_s(session, shared, ahead.total)
    if job.held_reason:
        limit = tenant_limit(session, job.tenant_id, settings)
        reason = f"tenant limit of {limit} queued+running jobs reached; dispatched when one finishes"
    else:
        order = "by priority, then in order of submission" if by_priority else "first in, first out"
        reason = f"waiting for a worker on queue {queue} ({ahead.total} job(s) ahead, served {order})"
    return QueueInfo(
        position=ahead.total,
        own_ahead=ahead.own,
        reason=reason,
        held=job.held_reason is not None,
        queue=queue,
        estimated_start_s=wait,
        estimated_start_at=None if wait is None else utcnow() + timedelta(seconds=wait),
    )


def estimated_wait_s(session: Session, queue: str | None, ahead: int) -> float | None:
    """A rough start estimate: the soonest a running job on the queue ends, then one mean run time of its last
    succeeded jobs per job ahead, shared by the slots now busy. None until a job there has succeeded."""
    durations = repository.recent_run_durations(session, queue)
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    running = repository.running_jobs(session, queue)
    slots = max(len(running), 1)
    first_free = min((_remaining_s(r, mean) for r in running), default=0.0)
    return round(first_free + ahead * mean / slots, 1)


def _remaining_s(job: repository.RunningJob, mean_s: float) -> float:
    """Its ETA from progress when known, else what remains of a mean run."""
    if job.step is not None and job.total_steps and job.step_time_s:
        return max(job.total_steps - job.step, 0) * job.step_time_s
    if job.started_at is None:
        return mean_s
    started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
    return max(mean_s - (utcnow() - started).total_seconds(), 0.0)


def job_view(job: Job, queue_info: QueueInfo | None = None, *, with_spec: bool = True) -> JobOut:
    return JobOut(
        id=job.id,
        name=job.name,
        status=job.status,
        tenant_id=job.tenant_id,
        queue=job.queue,
        priority=job.priority,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        spec=JobSpec.model_validate(job.spec) if with_spec else None,
        metadata=job.meta,
        progress=progress_of(job),
        queue_info=queue_info,
        resume_checkpoint_step=job.resume_checkpoint_step,
        control_job_id=job.control_job_id,
        control_of=job.control_of,
        cancel_requested_at=job.cancel_requested_at,
        failure_reason=job.failure_reason,
        failure_message=redact_paths(job.failure_message) if job.failure_message else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        sweep_id=job.sweep_id,
        sweep_arm=job.sweep_arm,
        links=job_links(job.id),
    )


def detailed_view(session: Session, job: Job, settings: Settings) -> JobOut:
    return job_view(job, queue_info_of(session, job, settings))


def list_jobs(
    session: Session,
    principal: Principal,
    filters: repository.JobFilters,
    limit: int,
    after: str | None,
    with_spec: bool = False,
) -> tuple[list[JobOut], str | None]:
    page = repository.list_jobs(session, principal, filters, limit, after, with_spec=with_spec)
    return [job_view(j, with_spec=with_spec) for j in page.items], page.next_cursor


# --- metrics ------------------------------------------------------------------------------------------------


def downsample(points: list[tuple[int, float]], max_points: int) -> list[MetricPoint]:
    """Split the series into max_points buckets of consecutive steps; each becomes (last step, mean value)."""
    if len(points) <= max_points:
        return [MetricPoint(step=s, value=v) for s, v in points]
    size = math.ceil(len(points) / max_points)
    buckets = [points[i : i + size] for i in range(0, len(points), size)]
    return [MetricPoint(step=b[-1][0], value=sum(v for _, v in b) / len(b)) for b in buckets]


def metric_series(
    session: Session,
    principal: Principal,
    job_id: str,
    names: list[str],
    step_min: int | None,
    step_max: int | None,
    max_points: int,
) -> list[MetricSeries]:
    job = load_job(session, principal, job_id)
    grouped: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, step, value in repository.list_metrics(session, job.id, names, step_min, step_max):
        grouped[name].append((step, value))
    return [
        MetricSeries(name=name, points=downsample(points, max_points), downsampled=len(points) > max_points)
        for name, points in sorted(grouped.items())
    ]


# --- checkpoints --------------------------------------------------------------------------------------------


def checkpoint_list(
    session: Session, principal: Principal, job_id: str, storage: Storage, expiry_s: int
) -> CheckpointList:
    job = load_job(session, principal, job_id)
    items = [
        _checkpoint_view(job.id, c, storage, expiry_s) for c in repository.list_complete_checkpoints(session, job.id)
    ]
    return CheckpointList(job_id=job.id, items=items)


def _checkpoint_view(job_id: str, checkpoint: Checkpoint, storage: Storage, expiry_s: int) -> CheckpointOut:
    files = []
    for path, sha in sorted(checkpoint.manifest.items()):
        url = storage.presigned_get_url(f"{checkpoint.storage_prefix}/{path}", expiry_s)
        files.append(
            CheckpointFile(path=path, sha256=sha, url=url or checkpoint_file_route(job_id, checkpoint.step, path))
        )
    return CheckpointOut(
        step=checkpoint.step,
        attempt=checkpoint.attempt,
        size_bytes=checkpoint.size_bytes,
        metrics=checkpoint.metrics,
        manifest=checkpoint.manifest,
        files=files,
        created_at=checkpoint.created_at,
    )


def model_view(session: Session, principal: Principal, job_id: str, storage: Storage, expiry_s: int) -> ModelOut:
    """The repaired model's files with download links; 404 until the worker has uploaded its manifest."""
    job = load_job(session, principal, job_id)
    manifest = _model_manifest(job.id, storage)
    files = []
    for path, sha in sorted(manifest.items()):
        key = f"{model_prefix(job.id)}/{path}"
        url = storage.presigned_get_url(key, expiry_s) or f"/v1/jobs/{job.id}/model/files/{quote(path)}"
        files.append(CheckpointFile(path=path, sha256=sha, url=url))
    size = sum(storage.size(f"{model_prefix(job.id)}/{path}") for path in manifest)
    return ModelOut(job_id=job.id, size_bytes=size, manifest=manifest, files=files)


def model_file(session: Session, principal: Principal, job_id: str, path: str, storage: Storage) -> CheckpointFileRef:
    job = load_job(session, principal, job_id)
    manifest = _model_manifest(job.id, storage)
    if path not in manifest:
        raise ModelNotReady(f"the model of job {job_id} has no file {path!r}")
    key = f"{model_prefix(job.id)}/{clean_key(path)}"
    return CheckpointFileRef(key=key, sha256=manifest[path], size=storage.size(key))


def _model_manifest(job_id: str, storage: Storage) -> dict[str, str]:
    key = model_manifest_key(job_id)
    if not storage.exists(key):
        raise ModelNotReady(f"job {job_id} has no repaired model yet")
    with storage.open(key) as handle:
        return json.load(handle)["files"]


def checkpoint_file_route(job_id: str, step: int, path: str) -> str:
    return f"/v1/jobs/{job_id}/checkpoints/{step}/files/{quote(path)}"


@dataclass(frozen=True)
class CheckpointFileRef:
    key: str
    sha256: str
    size: int


def checkpoint_file(
    session: Session, principal: Principal, job_id: str, step: int, path: str, storage: Storage
) -> CheckpointFileRef:
    """The storage object of one file of a complete checkpoint; only paths in its manifest exist."""
    job = load_job(session, principal, job_id)
    checkpoint = repository.get_complete_checkpoint(session, job.id, step)
    if checkpoint is None:
        raise CheckpointNotFound(f"job {job_id} has no complete checkpoint at step {step}")
    if path not in checkpoint.manifest:
        raise CheckpointNotFound(f"checkpoint {step} has no file {path!r}")
    key = f"{checkpoint.storage_prefix}/{clean_key(path)}"
    return CheckpointFileRef(key=key, sha256=checkpoint.manifest[path], size=storage.size(key))
