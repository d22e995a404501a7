from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from service.datasets import service
from service.datasets.schemas import DatasetFormat, DatasetKind, DatasetOut, DatasetPage
from service.deps import PrincipalDep, SessionDep, StateDep
from service.errors import problem_responses
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
    responses=problem_responses(413, 422),
    openapi_extra=UPLOAD_BODY,
    summary="Upload and validate a dataset",
    description="The body is streamed to storage (sha256 computed on the way), then every record is validated. "
    "A dataset with problems is stored with status `invalid` and its problems listed by line.",
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    name: Annotated[Name, Query()],
    format: Annotated[DatasetFormat, Query()] = "jsonl",
    kind: Annotated[DatasetKind, Query(description="training: mixture records; evaluation: suite items")] = "training",
) -> DatasetOut:
    spooled = await service.spool_upload(request.stream(), format, state.settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(
            service.ingest, session, state.storage, principal, spooled, name, format, kind
        )
    finally:
        shutil.rmtree(spooled.path.parent, ignore_errors=True)  # the spool folder holds the upload alone
    return service.dataset_view(dataset)


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
