from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from lingudistill.spec import JobSpec
from service.lifecycle import FailureReason, JobStatus
from service.schemas import CursorPage


class Progress(BaseModel):
    step: int | None = Field(None, description="Last optimiser step reported by the worker.")
    total_steps: int | None = None
    percent: float | None = Field(None, description="step / total_steps x 100.")
    eta_s: float | None = Field(None, description="Seconds to the last step at the smoothed step time.")
    tokens_per_s: float | None = Field(None, description="Training throughput.")
    step_time_s: float | None = Field(
        None,
        description="Seconds per optimiser step: a moving average (the newest step weighs 0.1), so one slow "
        "step (an evaluation, a checkpoint) does not swing the ETA.",
    )
    latest_metrics: dict[str, Any] | None = None
    attempt: int = Field(description="Attempt number (0 before the first claim).")


class QueueInfo(BaseModel):
    position: int = Field(
        description="Queued jobs the broker serves before this one (0: next), every tenant's counted: with Redis "
        "by priority then submission on the job's queue; on the embedded broker first in, first out on its one "
        "queue."
    )
    own_ahead: int = Field(
        0, description="Of `position`, this tenant's own jobs. Nothing else of other tenants' jobs is shown."
    )
    reason: str = Field(description="Why the job is waiting.")
    held: bool = Field(description="True when the job is held back by a tenant limit and not yet dispatched.")
    queue: str | None = Field(None, description="The broker queue the job waits on (the embedded broker has one).")
    estimated_start_s: float | None = Field(
        None,
        description="Rough seconds until a worker starts it: the soonest running job's end, then the mean run time "
        "of the queue's last 20 succeeded jobs per job ahead, shared by the busy slots. None without history.",
    )
    estimated_start_at: datetime | None = Field(None, description="now + estimated_start_s.")


class JobLinks(BaseModel):
    self: str
    events: str
    metrics: str
    checkpoints: str
    report: str
    cancel: str
    retry: str
    pause: str
    resume: str


class JobOut(BaseModel):
    id: str
    name: str
    status: JobStatus
    tenant_id: str
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    spec: JobSpec | None = Field(
        description="The resolved spec: every default written out, the seed generated. Lists leave it out (null) "
        "unless asked with view=full."
    )
    metadata: dict[str, str]
    progress: Progress
    queue_info: QueueInfo | None = Field(None, description="Present while the job is queued.")
    resume_checkpoint_step: int | None = Field(None, description="The next attempt resumes from this checkpoint.")
    control_job_id: str | None = Field(
        None,
        description="evaluation.control: this job's control arm (the same job with kd_sources none). The job waits "
        "in `comparing` until the control is final, then reports the lift over it.",
    )
    control_of: str | None = Field(None, description="Set on a control arm: the job it is the control of.")
    cancel_requested_at: datetime | None = None
    failure_reason: FailureReason | None = None
    failure_message: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    sweep_id: str | None = Field(None, description="The sweep this job is an arm of (GET /v1/sweeps/{id}).")
    sweep_arm: str | None = Field(None, description="Its arm's label in the sweep, e.g. 'method.kd_weight=0.5'.")
    links: JobLinks


class JobPage(CursorPage):
    items: list[JobOut]


class EventOut(BaseModel):
    id: int = Field(description="Monotonic event id; the SSE id and the pagination cursor.")
    job_id: str
    attempt: int
    type: str = Field(description="status, validation, checkpoint, evaluation, error, log, ...")
    level: Literal["info", "warning", "error"] = Field(
        "info", description="error: the job failed or cannot go on; warning: it recovers or was stopped."
    )
    message: str = Field("", description="One human-readable line; `data` holds the details.")
    data: dict[str, Any]
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None = Field(None, description="Pass as `after` for the next events.")
    has_more: bool = Field(False, description="True when more events are already stored after this page.")


class MetricPoint(BaseModel):
    step: int
    value: float


class MetricSeries(BaseModel):
    name: str
    points: list[MetricPoint]
    downsampled: bool


class MetricsOut(BaseModel):
    job_id: str
    series: list[MetricSeries]


class CheckpointFile(BaseModel):
    path: str
    sha256: str
    url: str = Field(description="A short-lived presigned URL (S3) or this API's streamed download route.")


class CheckpointOut(BaseModel):
    step: int
    attempt: int
    size_bytes: int
    metrics: dict[str, Any]
    manifest: dict[str, str] = Field(description="{relative file path: sha256}")
    files: list[CheckpointFile]
    created_at: datetime


class ModelOut(BaseModel):
    job_id: str
    size_bytes: int
    manifest: dict[str, str] = Field(description="{relative file path: sha256}")
    files: list[CheckpointFile] = Field(description="The repaired student's HF folder, file by file.")


class CheckpointList(BaseModel):
    job_id: str
    items: list[CheckpointOut]
