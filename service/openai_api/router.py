"""/openai/v1: OpenAI's fine-tuning routes over our jobs and datasets. Thin: each route translates and calls the
/v1 service functions, so tenant isolation, quotas and Idempotency-Key behave exactly as there."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from service.datasets import service as datasets
from service.deps import BufferDep, PrincipalDep, SessionDep, StateDep
from service.errors import AppError, FieldError, InvalidParameter
from service.jobs import repository
from service.jobs import service as jobs
from service.jobs.events import event_view
from service.jobs.router import create_job as create_v1_job
from service.jobs.schemas import JobOut
from service.openai_api import translate
from service.openai_api.schemas import CreateFineTuningJob, ErrorEnvelope, FileObject, FineTuningJob, ListPage
from service.pagination import encode_cursor

ERRORS = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        401: "Missing or invalid API key",
        404: "Not found (or another tenant's)",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid request (`param` names the field)",
        429: "Rate limited (see Retry-After)",
        500: "Internal error",
        503: "The database is unavailable (see Retry-After)",
    }.items()
}
router = APIRouter(prefix="/openai/v1", tags=["openai-compatible"], responses=ERRORS)  # type: ignore[arg-type]
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_CHUNK = 1 << 20
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("/files", response_model=FileObject, summary="Upload a training file (a dataset)")
async def create_file(
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
) -> FileObject:
    if purpose != "fine-tune":
        raise _invalid("purpose", f"purpose {purpose!r} is not supported; use fine-tune")
    name = PurePosixPath(file.filename or "upload.jsonl").name
    fmt = _FORMATS.get(PurePosixPath(name).suffix.lower())
    if fmt is None:
        raise _invalid("file", f"{name}: expected a .jsonl or .parquet file")
    spooled = await datasets.spool_upload(_chunks(file), fmt, state.settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(
            datasets.ingest, session, state.storage, principal, datasets.Upload(spooled, name, fmt, "training")
        )
    finally:
        shutil.rmtree(spooled.path.parent, ignore_errors=True)
    return translate.file_object(datasets.dataset_view(dataset))


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(_CHUNK):
        yield chunk


@router.get("/files/{file_id}", response_model=FileObject, summary="A training file")
def retrieve_file(file_id: str, session: SessionDep, principal: PrincipalDep) -> FileObject:
    return translate.file_object(datasets.dataset_view(datasets.load_dataset(session, principal, file_id)))


@router.post("/fine_tuning/jobs", response_model=FineTuningJob, summary="Create a LinguDistill fine-tuning job")
def create_fine_tuning_job(
    request: CreateFineTuningJob,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    buffer: BufferDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> FineTuningJob:
    spec = translate.job_spec(request)
    try:
        created = create_v1_job(spec, session, principal, state, buffer, idempotency_key)  # the /v1 route's rules
    except AppError as exc:  # its field errors name the spec's fields: name the request's instead
        exc.errors = [translate.request_field(error) for error in exc.errors or []] or None
        raise
    return translate.fine_tuning_job(_job_out(created))


def _job_out(created: Any) -> JobOut:
    """The /v1 route answers a JobOut, or a JSONResponse when it replays an Idempotency-Key."""
    body = getattr(created, "body", None)
    return JobOut.model_validate_json(body) if body is not None else created


@router.get("/fine_tuning/jobs", response_model=ListPage, summary="List fine-tuning jobs, newest first")
def list_fine_tuning_jobs(
    session: SessionDep, principal: PrincipalDep, limit: Limit = 20, after: str | None = None
) -> ListPage:
    cursor = None
    if after is not None:
        anchor = jobs.load_job(session, principal, after)
        cursor = encode_cursor(anchor.created_at, anchor.id)
    items, next_cursor = jobs.list_jobs(session, principal, repository.JobFilters(), limit, cursor, with_spec=True)
    data = [translate.fine_tuning_job(item) for item in items]
    return _page(data, has_more=next_cursor is not None)


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob, summary="A fine-tuning job")
def retrieve_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> Any:
    job = jobs.load_job(session, principal, job_id)
    return translate.fine_tuning_job(jobs.detailed_view(session, job, state.settings))


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob, summary="Cancel a fine-tuning job")
def cancel_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> Any:
    job = jobs.cancel_job(session, principal, job_id)
    return translate.fine_tuning_job(jobs.detailed_view(session, job, state.settings))


@router.post(
    "/fine_tuning/jobs/{job_id}/pause",
    response_model=FineTuningJob,
    summary="Pause a fine-tuning job at a checkpoint (pausing, then paused)",
)
def pause_fine_tuning_job(job_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> Any:
    job = jobs.pause_job(session, principal, job_id)
    return translate.fine_tuning_job(jobs.detailed_view(session, job, state.settings))


@router.post(
    "/fine_tuning/jobs/{job_id}/resume", response_model=FineTuningJob, summary="Resume a paused fine-tuning job"
)
def resume_fine_tuning_job(
    job_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep, buffer: BufferDep
) -> Any:
    job = jobs.resume_job(session, principal, job_id, state.settings, buffer)
    return translate.fine_tuning_job(jobs.detailed_view(session, job, state.settings))


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=ListPage, summary="A job's events, oldest first")
def list_fine_tuning_events(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    after: Annotated[str | None, Query(description="The id of the last event of the previous page.")] = None,
) -> ListPage:
    job = jobs.load_job(session, principal, job_id)
    if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
        raise _invalid("after", "after is the id of an event: a number")
    events = repository.list_events(session, job.id, int(after) if after else None, limit + 1)
    data = [translate.event(event_view(e)) for e in events[:limit]]  # the API's one-line messages, paths redacted
    return _page(data, has_more=len(events) > limit)


@router.get(
    "/fine_tuning/jobs/{job_id}/checkpoints", response_model=ListPage, summary="A job's checkpoints, newest first"
)
def list_fine_tuning_checkpoints(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    limit: Limit = 10,
    after: Annotated[str | None, Query(description="The id of the last checkpoint of the previous page.")] = None,
) -> ListPage:
    listed = jobs.checkpoint_list(session, principal, job_id, state.storage, state.settings.presigned_url_expiry_s)
    data = [translate.checkpoint(listed.job_id, c) for c in sorted(listed.items, key=lambda c: -c.step)]
    if after is not None:
        ids = [c.id for c in data]
        if after not in ids:
            raise _invalid("after", f"no checkpoint {after!r} in this job")
        data = data[ids.index(after) + 1 :]
    return _page(data[:limit], has_more=len(data) > limit)


def _page(data: list[Any], *, has_more: bool) -> ListPage:
    return ListPage(
        data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


def _invalid(field: str, message: str) -> InvalidParameter:
    return InvalidParameter(message, errors=[FieldError(loc=["body", field], msg=message)])
