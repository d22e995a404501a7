from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.deps import PrincipalDep, SessionDep, StateDep
from service.errors import problem_responses
from service.webhooks import service
from service.webhooks.schemas import (
    DeliveryPage,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EVENTS_DOC = """Events: `job.succeeded`, `job.failed`, `job.cancelled`, `checkpoint.created`. Each delivery is a POST
of `{"type", "timestamp", "data": {job_id, job_name, status, attempt, event_id, ...}}` signed per Standard Webhooks
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the
base64 part of the `whsec_` secret). A non-2xx answer, a timeout or a redirect is retried with exponential backoff;
loopback, private and link-local targets are refused at registration and at every delivery."""


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problem_responses(422),
    summary="Register a webhook endpoint",
    description=EVENTS_DOC + "\n\nThe response carries the signing secret; it is never shown again.",
)
def create_webhook(
    body: WebhookCreate, session: SessionDep, principal: PrincipalDep, state: StateDep
) -> WebhookCreated:
    return service.create_webhook(session, principal, body, state.settings)


@router.get("", response_model=WebhookPage, responses=problem_responses(422), summary="List webhook endpoints")
def list_webhooks(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: str | None = None,
) -> WebhookPage:
    items, cursor = service.list_webhooks(session, principal, limit, after)
    return WebhookPage(items=items, next_cursor=cursor)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=problem_responses(404), summary="A webhook endpoint")
def get_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> WebhookOut:
    return service.webhook_view(service.load_webhook(session, principal, webhook_id))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(404),
    summary="Delete a webhook endpoint and its delivery log",
)
def delete_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    service.delete_webhook(session, principal, webhook_id)
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    responses=problem_responses(404, 422),
    summary="The endpoint's delivery log, newest first, each with every attempt",
)
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: str | None = None,
    status: DeliveryStatus | None = None,
) -> DeliveryPage:
    return service.list_deliveries(session, principal, webhook_id, limit, after, status)
