from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field

from lingudistill.spec import JobSpec
from service.deps import BufferDep, PrincipalDep, SessionDep, StateDep
from service.downloads import StoredFile, download_responses, file_response
from service.errors import FieldError, InvalidParameter, NotFound, problem_responses
from service.idempotency import service as idempotency
from service.jobs import repository, service
from service.jobs.events import StreamLimits, event_stream, event_view
from service.jobs.schemas import CheckpointList, EventPage, JobOut, JobPage, MetricsOut, ModelOut
from service.lifecycle import JobStatus
from service.params import Int64, Step
from service.storage import InvalidKey, clean_key
from service.storage_layout import artifacts_prefix

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, "job id"]


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=problem_responses(409, 413, 422),
    summary="Submit a job",
    response_description="The queued job (GET it for its queue position).",
    description="Validates the spec and the URIs it names, stores the resolved spec and queues the job. With an "
    "`Idempotency-Key` (remembered 24 h by default), the same key and body answer the same job as it is now, with "
    "`Idempotent-Replayed: true`; a different body is 422; a duplicate sent while the first is in flight waits for it. "
    "With `evaluation.control: true` a second job, its control arm (`kd_sources: none`, the same seed), is created "
    "with it (`control_job_id`); the job waits in `comparing` for it, then its report has `control` and `lift`.",
)
def create_job(
    spec: JobSpec,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    buffer: BufferDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    if idempotency_key is None:
        return service.job_view(service.create_job(session, principal, spec, state.settings, buffer))
    key_hash = idempotency.request_hash(spec.model_dump(mode="json"))
    retention_h = state.settings.idempotency_retention_h
    replay = idempotency.reserve(session, principal.tenant_id, idempotency_key, key_hash, retention_h)
    if replay is not None:  # the job as it is now (cancelled, running...), not as it was created
        current = service.job_view(service.load_job(session, principal, replay.body["id"])).model_dump(mode="json")
        return JSONResponse(current, status_code=replay.status, headers={"Idempotent-Replayed": "true"})
    job = service.create_job(session, principal, spec, state.settings, buffer)
    body = service.job_view(job).model_dump(mode="json")
    idempotency.complete(session, principal.tenant_id, idempotency_key, 201, body)
    return JSONResponse(body, status_code=201)


def _iso_only(value: object) -> object:
    """The OpenAPI says date-time; pydantic alone would also take '0.5' as a Unix time (Schemathesis, issue 9)."""
    if isinstance(value, str) and value.lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("use an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]


@router.get("", response_model=JobPage, responses=problem_responses(422), summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(description="A next_cursor from the previous page.")] = None,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    name: str | None = None,
    metadata: Annotated[list[str] | None, Query(description="key=value; repeat to require several.")] = None,
    created_after: IsoDatetime | None = None,
    created_before: IsoDatetime | None = None,
    view: Annotated[
        Literal["summary", "full"],
        Query(
            description="summary: each job without its resolved spec (null; GET /v1/jobs/{id} has it). full: with it."
        ),
    ] = "summary",
) -> JobPage:
    filters = repository.JobFilters(
        statuses=status or (),
        name=name,
        metadata=_parse_metadata(metadata or []),
        created_after=created_after,
        created_before=created_before,
    )
    items, cursor = service.list_jobs(session, principal, filters, limit, after, with_spec=view == "full")
    return JobPage(items=items, next_cursor=cursor)


def _parse_metadata(pairs: list[str]) -> dict[str, str]:
    if any("=" not in pair for pair in pairs):
        error = FieldError(loc=["query", "metadata"], msg="each metadata filter is key=value")
        raise InvalidParameter("metadata filters are key=value", errors=[error])
    return dict(pair.split("=", 1) for pair in pairs)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(404), summary="A job with its progress")
def get_job(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> JobOut:
    return service.detailed_view(session, service.load_job(session, principal, job_id), state.settings)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=problem_responses(404, 409),
    summary="Cancel a job",
    description="queued, paused or comparing: cancelled at once; running or pausing: cancelling, then cancelled by the "
    "worker. A job's control arm is cancelled with it.",
)
def cancel_job(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> JobOut:
    return service.detailed_view(session, service.cancel_job(session, principal, job_id), state.settings)


@router.post(
    "/{job_id}/pause",
    response_model=JobOut,
    responses=problem_responses(404, 409),
    summary="Pause a job at a checkpoint, freeing its GPU",
    description="queued: paused at once (held, not dispatched); running: pausing, then paused once the worker saved "
    "a checkpoint at the next step boundary, uploaded it and released the GPU; validating: paused once validation "
    "ends, before any step. A paused attempt does not count against max_attempts. Pausing a pausing or paused job "
    "answers it unchanged; any other status is 409 `invalid_transition` (an evaluating job has no step left to stop "
    "at).",
)
def pause_job(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> JobOut:
    return service.detailed_view(session, service.pause_job(session, principal, job_id), state.settings)


@router.post(
    "/{job_id}/resume",
    response_model=JobOut,
    responses=problem_responses(404, 409),
    summary="Resume a paused job",
    description="paused: queued again (or held by the tenant's job limit); the next attempt resumes from the "
    "pause's checkpoint with the data order and random state of an uninterrupted run. Any other status is 409 "
    "`invalid_transition`.",
)
def resume_job(
    job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep, buffer: BufferDep
) -> JobOut:
    job = service.resume_job(session, principal, job_id, state.settings, buffer)
    return service.detailed_view(session, job, state.settings)


@router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    responses=problem_responses(404, 409),
    summary="Retry a failed or cancelled job",
    description="A new attempt, resuming from the last complete checkpoint. A job's control arm is retried with it "
    "when it failed or was cancelled too.",
)
def retry_job(
    job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep, buffer: BufferDep
) -> JobOut:
    job = service.retry_job(session, principal, job_id, state.settings, buffer)
    return service.detailed_view(session, job, state.settings)


SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of events (JSON), or with `Accept: text/event-stream` a live stream",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'retry: 2000\nid: 7\nevent: status\ndata: {"id": 7, "type": "status", ...}\n\n'
                ": keep-alive\n",
            }
        },
    }
}


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    responses={**SSE_RESPONSE, **problem_responses(404)},
    summary="The job's event log",
    description="JSON pages by event id (`after`, `limit`). With `Accept: text/event-stream` the events stream live "
    "as SSE (`id` is the event id, `data` the event as JSON), resume after `Last-Event-ID`, and the stream ends once "
    "the job is final or the API key is revoked. Keep-alives are comment lines.",
)
def job_events(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    after: Annotated[Int64 | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[Int64 | None, Header(description="SSE: resume after this event id.")] = None,
) -> Any:
    job = service.load_job(session, principal, job_id)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = last_event_id if last_event_id is not None else after
        settings = state.settings
        limits = StreamLimits(settings.sse_poll_interval_s, settings.sse_max_duration_s, settings.sse_keepalive_s)
        stream = event_stream(state.sessions, job.id, principal.key_id, start, limits)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    events = repository.list_events(session, job.id, after, limit + 1)  # one more: are there more after this page?
    items = [event_view(e) for e in events[:limit]]
    return EventPage(items=items, next_cursor=items[-1].id if items else after, has_more=len(events) > limit)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsOut,
    responses=problem_responses(404, 422),
    summary="Training metrics",
    description="Filter by `names` and a step range. A series longer than `max_points` is downsampled: its points "
    "are split into `max_points` buckets of consecutive steps and each bucket is reported as the MEAN of its values "
    "at the bucket's LAST step.",
)
def job_metrics(
    job_id: JobId,
    session: SessionDep,
    principal: PrincipalDep,
    names: Annotated[list[str] | None, Query()] = None,
    step_min: Annotated[Step | None, Query()] = None,
    step_max: Annotated[Step | None, Query()] = None,
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> MetricsOut:
    series = service.metric_series(session, principal, job_id, names or [], step_min, step_max, max_points)
    return MetricsOut(job_id=job_id, series=series)


@router.get(
    "/{job_id}/checkpoints",
    response_model=CheckpointList,
    responses=problem_responses(404),
    summary="Complete checkpoints with their sha256 manifest and download links",
    description="On S3 each file's `url` is a short-lived presigned GET; on local storage it is this API's "
    "streamed `/files/{path}` route (send the same API key).",
)
def job_checkpoints(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> CheckpointList:
    return service.checkpoint_list(session, principal, job_id, state.storage, state.settings.presigned_url_expiry_s)


def stored_file(ref: service.CheckpointFileRef) -> StoredFile:
    """A checkpoint or model file with its sha256, so a client verifies what it received."""
    return StoredFile(key=ref.key, size=ref.size, sha256=ref.sha256)


@router.get(
    "/{job_id}/checkpoints/{step}/files/{path:path}",
    response_class=StreamingResponse,
    responses=download_responses(),
    summary="Download one checkpoint file (local storage); HEAD and Range supported",
)
@router.head("/{job_id}/checkpoints/{step}/files/{path:path}", include_in_schema=False)
def checkpoint_file(
    job_id: JobId,
    step: Step,
    path: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
) -> Response:
    ref = service.checkpoint_file(session, principal, job_id, step, path, state.storage)
    return file_response(request, state.storage, stored_file(ref))


@router.get(
    "/{job_id}/model",
    response_model=ModelOut,
    responses=problem_responses(404),
    summary="The repaired model: its files, sha256 manifest and download links",
    description="404 with code `model_not_ready` until the job has succeeded and its model was uploaded. On S3 "
    "each `url` is a short-lived presigned GET; on local storage it is the streamed `/model/files/{path}` route.",
)
def job_model(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> ModelOut:
    return service.model_view(session, principal, job_id, state.storage, state.settings.presigned_url_expiry_s)


@router.get(
    "/{job_id}/model/files/{path:path}",
    response_class=StreamingResponse,
    responses=download_responses(),
    summary="Download one file of the repaired model (local storage); HEAD and Range supported",
    description="`Range: bytes=FIRST-` resumes an interrupted download (206); `If-Range` with the ETag (the sha256) "
    "makes sure the parts are of one file.",
)
@router.head("/{job_id}/model/files/{path:path}", include_in_schema=False)
def model_file(
    job_id: JobId, path: str, request: Request, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> Response:
    ref = service.model_file(session, principal, job_id, path, state.storage)
    return file_response(request, state.storage, stored_file(ref))


@router.get(
    "/{job_id}/report",
    response_model=dict[str, Any],
    responses=problem_responses(404),
    summary="The recovery report",
    description="404 with code `report_not_ready` until the job has one.",
)
def job_report(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    return service.get_report(session, principal, job_id)


# --- report artifacts (added for the web UI, issue 6) ----------------------------------------------------------------
# The worker stores report.md, report.json, metrics.jsonl and the SVG plots under jobs/{id}/artifacts/
# (worker.transfers.upload_results); these two routes list and serve them, behind the same tenant check as the job.
ARTIFACT_MEDIA_TYPES = {
    ".md": "text/markdown; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}


class ArtifactNotFound(NotFound):
    code, title = "artifact_not_found", "Report file not found"


class ReportFile(BaseModel):
    name: str
    size_bytes: int
    url: str = Field(description="This API's download route (send the same API key).")


class ReportFileList(BaseModel):
    job_id: str
    items: list[ReportFile]


def _artifact_prefix(job_id: str) -> str:
    return artifacts_prefix(job_id)


@router.get(
    "/{job_id}/report/files",
    response_model=ReportFileList,
    responses=problem_responses(404),
    summary="The report's stored files: report.md, report.json, metrics.jsonl and the SVG plots",
    description="Empty until the job has finished and its results were uploaded.",
)
def report_files(job_id: JobId, session: SessionDep, principal: PrincipalDep, state: StateDep) -> ReportFileList:
    job = service.load_job(session, principal, job_id)
    prefix = _artifact_prefix(job.id)
    names = [key.removeprefix(prefix) for key in state.storage.list(prefix) if "/" not in key.removeprefix(prefix)]
    items = [
        ReportFile(name=n, size_bytes=state.storage.size(prefix + n), url=f"/v1/jobs/{job.id}/report/files/{quote(n)}")
        for n in names
    ]
    return ReportFileList(job_id=job.id, items=items)


@router.get(
    "/{job_id}/report/files/{name}",
    response_class=StreamingResponse,
    responses=download_responses(*sorted({*ARTIFACT_MEDIA_TYPES.values(), "application/octet-stream"})),
    summary="Download one report file (Markdown, JSON or a plot); HEAD and Range supported",
)
@router.head("/{job_id}/report/files/{name}", include_in_schema=False)
def report_file(
    job_id: JobId, name: str, request: Request, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> Response:
    job = service.load_job(session, principal, job_id)
    try:
        key = _artifact_prefix(job.id) + clean_key(name)
    except InvalidKey:
        raise ArtifactNotFound(f"no report file {name!r}") from None
    if "/" in name or not state.storage.exists(key):
        raise ArtifactNotFound(f"job {job_id} has no report file {name!r}")
    media_type = ARTIFACT_MEDIA_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
    # sandbox: an SVG or HTML file opened directly never runs script in this origin
    headers = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    file = StoredFile(key=key, size=state.storage.size(key), media_type=media_type, headers=headers)
    return file_response(request, state.storage, file)
