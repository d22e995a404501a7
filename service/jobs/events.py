"""The job event log as Server-Sent Events: polls the database, resumes after Last-Event-ID, ends after a
final state's events are sent, or when the API key the stream was opened with is revoked.

Only an event ends with a blank line. The `retry` field and the keep-alives are lines without one: a blank line
dispatches an event, and a strict client (httpx-sse) that already saw an `id` would dispatch an empty one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.jobs import repository
from service.jobs.schemas import EventOut
from service.keys import repository as keys_repository
from service.models import JobEvent
from service.redact import redact_data

BATCH = 200
RETRY_FIELD = "retry: 2000\n"  # browsers apply it when they read the line; it needs no event of its own
KEEPALIVE = ": keep-alive\n"


@dataclass(frozen=True)
class StreamLimits:
    poll_s: float  # how often the database is read (and the key checked again)
    max_s: float  # the stream closes after this; clients resume with Last-Event-ID
    keepalive_s: float  # a comment line after this long without an event keeps proxies from closing the stream


# --- what an event says to a person -----------------------------------------------------------------------------
Level = Literal["info", "warning", "error"]
_LEVELS: dict[str, Level] = {"info": "info", "warning": "warning", "warn": "warning", "error": "error"}
_STATUS_LEVELS: dict[str, Level] = {"failed": "error", "cancelling": "warning", "cancelled": "warning"}


def _pause_text(data: dict[str, Any]) -> str | None:
    """The moves of a pause and a resume, in words; None for any other status."""
    status, step = data.get("status"), data.get("step")
    if status == "pausing":
        return "Pause requested: the job stops at its next step boundary, after saving a checkpoint there."
    if status == "paused" and data.get("by") == "user":
        return "Paused before it started; it is not dispatched until resumed."
    if status == "paused":
        where = f"at step {step} (checkpoint {data.get('checkpoint')})" if step is not None else "before any checkpoint"
        return f"Paused {where}; the GPU is free until the job is resumed."
    if status == "queued" and data.get("resumed"):
        step = data.get("resume_from_step")
        held = " (held: the tenant's limit of active jobs is reached)" if data.get("held") else ""
        return f"Resumed{held}: queued to continue " + (
            f"from the checkpoint at step {step}." if step is not None else "from the first step."
        )
    return None


def _status_text(data: dict[str, Any]) -> str:
    paused = _pause_text(data)
    if paused is not None:
        return paused
    text = str(data.get("status", "?")).capitalize()
    if data.get("by") == "user":
        text += " by the user"
    if data.get("control_of"):
        text += f" as the control arm of {data['control_of']}"
    if data.get("status") == "comparing":
        text += ": trained and evaluated, waiting for the control arm to report the lift"
    if data.get("held"):
        text += " (held: the tenant's limit of active jobs is reached)"
    step = data.get("resume_from_step", data.get("resume_checkpoint_step"))
    if data.get("retry"):
        text += " for a retry" + (f", to resume from the checkpoint at step {step}" if step is not None else "")
    text += "."
    if data.get("failure_message"):
        reason = data.get("failure_reason")
        text += f" {reason}: {data['failure_message']}" if reason else f" {data['failure_message']}"
    return text


def _size(value: Any) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _scores(scores: Any) -> str:
    """Scores in [0, 1] as percentages, as the UI and the report show them."""
    if not isinstance(scores, dict):
        return str(scores)
    return ", ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


def _comparison(d: dict[str, Any]) -> str:
    lift = d.get("mean_recovery_lift") or {}

    def signed(value: Any) -> str:
        return "n/a" if value is None else f"{value:+.3f}"

    interval = f"95% interval {signed(lift.get('low'))} to {signed(lift.get('high'))}"
    verdict = "passed" if d.get("passed") else "failed"
    return (
        f"Compared with the control arm {d.get('control_job_id')}: mean-recovery lift {signed(lift.get('estimate'))} "
        f"({interval}); verdict {verdict}."
    )


def _training(d: dict[str, Any]) -> str:
    if d.get("from_step"):
        return f"Training resumed at step {d['from_step']} of {d.get('total_steps')}."
    return f"Training started: {d.get('total_steps')} steps."


# type -> (level, message from data); an unknown type is info and named as it is. error: the attempt cannot go on;
# warning: something went wrong that the job recovers from (a retry, a skipped checkpoint) or a stop under way.
_DESCRIBE: dict[str, tuple[Level, Callable[[dict[str, Any]], str]]] = {
    "checkpoint": ("info", lambda d: f"Checkpoint saved at step {d.get('step')} ({_size(d.get('size_bytes'))})."),
    "checkpoint_rejected": (
        "warning",
        lambda d: f"The checkpoint at step {d.get('step')} was unusable and skipped: {d.get('error')}",
    ),
    "checkpoint_upload_failed": (
        "warning",
        lambda d: f"The checkpoint at step {d.get('step')} could not be uploaded: {d.get('error')}",
    ),
    "resuming": ("info", lambda d: f"Resuming from the checkpoint at step {d.get('step')}."),
    "child_started": (
        "info",
        lambda d: (
            "Training process started"
            + (f" with {d['ranks']} GPU(s)" if d.get("ranks") else "")
            + (", resuming." if d.get("resume") else ".")
        ),
    ),
    "training": ("info", _training),
    "comparison": ("info", _comparison),
    "evaluation": ("info", lambda d: f"Evaluated at step {d.get('step')}: {_scores(d.get('scores'))}."),
    "stopping": ("warning", lambda d: f"Stopping the training process ({d.get('grace_s')} s to save a checkpoint)."),
    "stalled": (
        "error",
        lambda d: f"No progress for {d.get('seconds')} s at step {d.get('step')}; the training process is stopped.",
    ),
    "child_error": ("error", lambda d: f"The training process failed: {d.get('error')}"),
    "attempt_failed": (
        "warning",
        lambda d: f"This attempt failed ({d.get('reason') or 'error'}): {d.get('message') or ''}".rstrip(": "),
    ),
    "reuploading": (
        "info",
        lambda d: (
            f"Uploading the results of the finished run ({d.get('steps')} steps) kept from the last attempt; "
            "nothing is trained again."
        ),
    ),
    "upload_retry": ("warning", lambda d: f"Upload attempt {d.get('try')} failed, retrying: {d.get('error')}"),
    "uploaded": (
        "info",
        lambda d: (
            f"Uploaded the repaired model ({d.get('model_files')} file(s)) and the report "
            f"({d.get('artifact_files')} file(s))."
        ),
    ),
}


def describe(type: str, data: dict[str, Any]) -> tuple[Level, str]:
    if type == "notice":  # a notice (a tracker's run link, an outage) carries its own level and message
        level = _LEVELS.get(str(data.get("level", "info")).lower(), "info")
        return level, str(data.get("message", ""))
    if type == "status":
        return _STATUS_LEVELS.get(str(data.get("status")), "info"), _status_text(data)
    level, text = _DESCRIBE.get(type, ("info", lambda d: type.replace("_", " ").capitalize()))
    return level, text(data)


def event_view(event: JobEvent) -> EventOut:
    """The event as the tenant sees it: worker paths redacted, with a level and a one-line message."""
    data = redact_data(event.data)
    level, message = describe(event.type, data)
    return EventOut(
        id=event.id,
        job_id=event.job_id,
        attempt=event.attempt,
        type=event.type,
        level=level,
        message=message,
        data=data,
        created_at=event.created_at,
    )


def format_sse(event: JobEvent) -> str:
    payload = event_view(event).model_dump_json()
    return f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"


@dataclass(frozen=True)
class Poll:
    key_active: bool
    final: bool
    events: list[JobEvent]


def _poll(sessions: sessionmaker[Session], job_id: str, key_id: str, after: int | None) -> Poll:
    """One read: the key is checked on every poll (a primary-key lookup), so a revoked key's stream ends within a
    poll interval; the status is read before the events so no final event is missed."""
    with sessions() as session:
        key = keys_repository.get_key(session, key_id)
        state = repository.get_job_state(session, job_id)
        final = state is None or state.status.is_final
        events = repository.list_events(session, job_id, after, BATCH)
        return Poll(key is not None and key[0].revoked_at is None, final, events)


async def event_stream(
    sessions: sessionmaker[Session], job_id: str, key_id: str, after: int | None, limits: StreamLimits
) -> AsyncIterator[str]:
    yield RETRY_FIELD
    deadline = time.monotonic() + limits.max_s
    last_sent = time.monotonic()
    while time.monotonic() < deadline:
        poll = await run_in_threadpool(_poll, sessions, job_id, key_id, after)
        if not poll.key_active:
            return
        for event in poll.events:
            yield format_sse(event)
            after = event.id
        if poll.events:
            last_sent = time.monotonic()
            continue
        if poll.final:
            return
        if time.monotonic() - last_sent > limits.keepalive_s:
            yield KEEPALIVE
            last_sent = time.monotonic()
        await anyio.sleep(limits.poll_s)
