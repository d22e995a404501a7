from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth import Principal
from service.datasets import service
from service.datasets.schemas import DatasetFormat, DatasetKind, DatasetOut, DatasetPage
from service.deps import AppState, PrincipalDep, SessionDep, StateDep
from service.downloads import download_responses, file_response
from service.errors import problem_responses
from service.idempotency import service as idempotency
from service.params import Name

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The raw file (JSONL or Parquet), streamed; not multipart.",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses=problem_responses(409, 413, 422),
    openapi_extra=UPLOAD_BODY,
    summary="Upload and validate a dataset",
    description="The body is streamed to storage (sha256 computed on the way), then every record is validated. "
    "A dataset with problems is stored with status `invalid` and its problems listed by line; inline images are "
    "decoded under a pixel bound. With an `Idempotency-Key` a retried upload replays the first response.",
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    name: Annotated[Name, Query()],
    format: Annotated[DatasetFormat, Query()] = "jsonl",
    kind: Annotated[DatasetKind, Query(description="training: mixture records; evaluation: suite items")] = "training",
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    spooled = await service.spool_upload(request.stream(), format, state.settings.max_upload_bytes)
    try:
        upload = service.Upload(spooled, name, format, kind)
        if idempotency_key is None:
            dataset = await run_in_threadpool(service.ingest, session, state.storage, principal, upload)
            return service.dataset_view(dataset)
        return await run_in_threadpool(_ingest_once, session, state, principal, upload, idempotency_key)
    finally:
        shutil.rmtree(spooled.path.parent, ignore_errors=True)  # the spool folder holds the upload alone


def _ingest_once(session: Session, state: AppState, principal: Principal, upload: service.Upload, key: str) -> Any:
    """With an Idempotency-Key, as for POST /v1/jobs: the same key and upload (name, format, kind and sha256 of
    the body) replay the first response (a dataset never changes); a different upload is 422."""
    retention_h = state.settings.idempotency_retention_h
    replay = idempotency.reserve(session, principal.tenant_id, key, upload.request_hash(), retention_h)
    if replay is not None:
        return JSONResponse(replay.body, status_code=replay.status, headers={"Idempotent-Replayed": "true"})
    dataset = service.ingest(session, state.storage, principal, upload)
    body = service.dataset_view(dataset).model_dump(mode="json")
    idempotency.complete(session, principal.tenant_id, key, 201, body)
    return JSONResponse(body, status_code=201)


@router.get("", response_model=DatasetPage, responses=problem_responses(422), summary="List datasets, newest first")
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: str | None = None,
) -> DatasetPage:
    items, cursor = service.list_datasets(session, principal, limit, after)
    return DatasetPage(items=items, next_cursor=cursor)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=problem_responses(404), summary="A dataset")
def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> DatasetOut:
    return service.dataset_view(service.load_dataset(session, principal, dataset_id))


@router.get(
    "/{dataset_id}/content",
    response_class=StreamingResponse,
    responses=download_responses(*service.MEDIA_TYPES.values()),
    summary="Download the dataset file as uploaded; HEAD and Range supported",
    description="The bytes uploaded, with their sha256 as ETag and X-Checksum-Sha256.",
)
@router.head("/{dataset_id}/content", include_in_schema=False)
def download_dataset(
    dataset_id: str, request: Request, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> Response:
    dataset = service.load_dataset(session, principal, dataset_id)
    return file_response(request, state.storage, service.dataset_file(dataset))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404, 409),
    summary="Delete a dataset and its file",
    description="409 `dataset_in_use` while a job that is not final names it. Finished jobs keep their results; a "
    "retry of a failed or cancelled job that names a deleted dataset is refused (422 `uri_not_allowed`).",
)
def delete_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> Response:
    service.delete_dataset(session, state.storage, principal, dataset_id)
    return Response(status_code=204)
