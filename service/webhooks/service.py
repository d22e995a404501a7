"""Webhook endpoint use cases. No commits here: the request's session commits."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.auth import Principal
from service.errors import AppError, FieldError, NotFound
from service.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from service.settings import Settings
from service.webhooks import repository
from service.webhooks.schemas import (
    DeliveryAttemptOut,
    DeliveryOut,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
)
from service.webhooks.signing import generate_secret
from service.webhooks.targets import TargetRefused, check_target


class WebhookNotFound(NotFound):
    code, title = "webhook_not_found", "Webhook not found"


class WebhookUrlNotAllowed(AppError):
    status, code, title = 422, "webhook_url_not_allowed", "The webhook URL is not allowed"


def create_webhook(session: Session, principal: Principal, body: WebhookCreate, settings: Settings) -> WebhookCreated:
    try:
        check_target(body.url, settings.allow_private_network)
    except TargetRefused as exc:
        raise WebhookUrlNotAllowed(str(exc), errors=[FieldError(loc=["body", "url"], msg=str(exc))]) from exc
    endpoint = WebhookEndpoint(
        tenant_id=principal.tenant_id,
        url=body.url,
        description=body.description,
        events=list(body.events),
        secret=generate_secret(),
    )
    repository.add_endpoint(session, endpoint)
    return WebhookCreated(**webhook_view(endpoint).model_dump(), secret=endpoint.secret)


def load_webhook(session: Session, principal: Principal, webhook_id: str) -> WebhookEndpoint:
    endpoint = repository.get_endpoint(session, principal, webhook_id)
    if endpoint is None:
        raise WebhookNotFound(f"no webhook {webhook_id}")
    return endpoint


def delete_webhook(session: Session, principal: Principal, webhook_id: str) -> None:
    repository.delete_endpoint(session, load_webhook(session, principal, webhook_id))


def list_webhooks(
    session: Session, principal: Principal, limit: int, after: str | None
) -> tuple[list[WebhookOut], str | None]:
    page = repository.list_endpoints(session, principal, limit, after)
    return [webhook_view(e) for e in page.items], page.next_cursor


def list_deliveries(
    session: Session, principal: Principal, webhook_id: str, limit: int, after: str | None, status: str | None
) -> DeliveryPage:
    endpoint = load_webhook(session, principal, webhook_id)
    page = repository.list_deliveries(session, endpoint.id, limit, after, status)
    attempts = repository.attempts_of(session, [d.id for d in page.items])
    items = [delivery_view(d, attempts.get(d.id, [])) for d in page.items]
    return DeliveryPage(items=items, next_cursor=page.next_cursor)


def webhook_view(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        description=endpoint.description,
        created_at=endpoint.created_at,
    )


def delivery_view(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,  # type: ignore[arg-type]
        job_id=delivery.job_id,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        payload=delivery.payload,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        attempt_log=[DeliveryAttemptOut.model_validate(a, from_attributes=True) for a in attempts],
    )
