from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from service.schemas import CursorPage

WebhookEventType = Literal["job.succeeded", "job.failed", "job.cancelled", "checkpoint.created"]
EVENT_TYPES: tuple[WebhookEventType, ...] = ("job.succeeded", "job.failed", "job.cancelled", "checkpoint.created")
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookCreate(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="http(s) URL; private and loopback hosts refused.")
    events: list[WebhookEventType] = Field(
        default_factory=lambda: list(EVENT_TYPES), min_length=1, description="Event types to deliver (default all)."
    )
    description: str = Field("", max_length=200)

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEventType]) -> list[WebhookEventType]:
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[WebhookEventType]
    description: str
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="whsec_... signing secret (Standard Webhooks). Shown only in this response: store it now."
    )


class WebhookPage(CursorPage):
    items: list[WebhookOut]


class DeliveryAttemptOut(BaseModel):
    attempt: int
    status_code: int | None = Field(None, description="The receiver's HTTP status; null when no response came.")
    error: str | None = Field(None, description="Why the attempt failed (status, timeout, refused target, ...).")
    duration_ms: int
    created_at: datetime


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header: the same on every attempt of this delivery.")
    webhook_id: str
    event_id: int = Field(description="The job event (GET /v1/jobs/{job_id}/events) this delivery announces.")
    event_type: WebhookEventType
    job_id: str
    status: DeliveryStatus = Field(description="pending (more attempts due), succeeded, or failed (gave up).")
    attempts: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    payload: dict[str, Any] = Field(description="The JSON body sent.")
    created_at: datetime
    finished_at: datetime | None = None
    attempt_log: list[DeliveryAttemptOut] = Field(description="Every attempt, oldest first.")


class DeliveryPage(CursorPage):
    items: list[DeliveryOut]
