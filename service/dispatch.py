"""Sending job ids to the broker, only after the database commit.

A Celery message is only a wake-up carrying a job id: the worker claims the job's row with a lease, so a duplicated
message is harmless. A lost one (the API crashed between its commit and the send, or Redis lost its queue in an
outage) is found by the sweeper: a queued job unclaimed for a while whose message is no longer in the broker
(`Dispatcher.missing`) is sent again, once.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service.settings import Settings

log = logging.getLogger(__name__)
RUN_JOB_TASK = "lingudistill.run_job"  # the worker registers its task under this name


@dataclass(frozen=True)
class Wakeup:
    job_id: str
    queue: str
    priority: int  # the spec's priority: 0..9, 9 most urgent


class Dispatcher(Protocol):
    def send(self, wakeup: Wakeup) -> None: ...
    def check(self) -> None: ...

    def missing(self, wakeups: Sequence[Wakeup]) -> list[Wakeup] | None:
        """Those of `wakeups` whose message is nowhere in the broker (neither waiting in its queue nor held
        unacknowledged by a worker); None when this broker cannot be inspected."""
        ...


def celery_broker_config(settings: Settings) -> dict[str, Any]:
    """Broker settings shared by the API's client app and the worker's app."""
    options = dict(settings.broker_transport_options)
    if settings.broker_url_resolved.startswith(("redis://", "rediss://")):
        # All ten priority levels (kombu's Redis default is four); sender and workers must agree on them.
        options.update({"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"})
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    return {"broker_url": settings.broker_url_resolved, "broker_transport_options": options}


EMBEDDED_QUEUE = "gpu"  # the embedded workers' queue (worker settings' default)


def broker_queue(settings: Settings, queue: str) -> str:
    """The queue a job's wake-up goes to. The embedded default is one machine whose workers read one queue: a
    spec's GPU kind names nothing there."""
    return queue if settings.broker_url else EMBEDDED_QUEUE


def broker_honours_priority(settings: Settings) -> bool:
    """Only Redis is set up to serve by priority (celery_broker_config); other brokers are first in, first out."""
    return settings.broker_url_resolved.startswith(("redis://", "rediss://"))


def broker_priority(priority: int, broker_url: str) -> int:
    """Redis treats 0 as the most urgent priority; the spec says 9 is."""
    return 9 - priority if broker_url.startswith(("redis", "rediss")) else priority


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        from celery import Celery

        self.app = Celery("lingudistill-api", set_as_current=False)
        self.app.conf.update(celery_broker_config(settings), task_create_missing_queues=True)
        self.broker_url = settings.broker_url_resolved
        self.settings = settings

    def send(self, wakeup: Wakeup) -> None:
        self.app.send_task(
            RUN_JOB_TASK,
            args=[wakeup.job_id],
            queue=broker_queue(self.settings, wakeup.queue),
            priority=broker_priority(wakeup.priority, self.broker_url),
        )

    def check(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def missing(self, wakeups: Sequence[Wakeup]) -> list[Wakeup] | None:
        queues = {broker_queue(self.settings, w.queue) for w in wakeups}
        if self.broker_url.startswith(("redis://", "rediss://")):
            raw = _redis_messages(self.broker_url, queues)
        elif self.broker_url.startswith("filesystem://"):
            raw = _folder_messages(self.app.conf.broker_transport_options["data_folder_in"], queues)
        else:
            return None
        present = {job_id for message in raw if (job_id := _wakeup_job_id(message)) is not None}
        return [w for w in wakeups if w.job_id not in present]


def _redis_messages(url: str, queues: Iterable[str]) -> Iterator[bytes]:
    """Every message waiting in `queues` (one Redis list per priority step, named as kombu names them with the sep
    set in celery_broker_config) and every message a worker holds unacknowledged."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for step in range(10):
                pipe.lrange(queue if step == 0 else f"{queue}:{step}", 0, -1)
        pipe.hvals("unacked")
        *lists, unacked = pipe.execute()
    finally:
        client.close()
    for messages in lists:
        yield from messages
    for held in unacked:  # kombu stores [message, exchange, routing key]
        yield json.dumps(json.loads(held)[0]).encode()


def _folder_messages(folder: str, queues: Iterable[str]) -> Iterator[bytes]:
    """kombu's filesystem transport: one `<time>_<uuid>.<queue>.msg` file per waiting message."""
    for queue in queues:
        for path in Path(folder).glob(f"*.{queue}.msg"):
            try:
                yield path.read_bytes()
            except FileNotFoundError:  # taken by a worker meanwhile
                continue


def _wakeup_job_id(raw: bytes) -> str | None:
    """The job id a kombu message carries when it is one of our wake-ups (Celery protocol 2, JSON)."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != RUN_JOB_TASK:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@dataclass
class RecordingDispatcher:
    """For tests: remembers what would have been sent."""

    sent: list[Wakeup] = field(default_factory=list)

    def send(self, wakeup: Wakeup) -> None:
        self.sent.append(wakeup)

    def check(self) -> None:
        pass

    def missing(self, wakeups: Sequence[Wakeup]) -> list[Wakeup] | None:
        return None


@dataclass
class DispatchBuffer:
    """Wake-ups collected during a request; flushed after the commit, dropped on rollback."""

    pending: list[Wakeup] = field(default_factory=list)

    def add(self, job_id: str, queue: str, priority: int) -> None:
        self.pending.append(Wakeup(job_id, queue, priority))

    def discard(self) -> None:
        self.pending.clear()

    def flush(self, dispatcher: Dispatcher) -> None:
        pending, self.pending = self.pending, []
        for wakeup in pending:
            try:
                dispatcher.send(wakeup)
            except Exception:  # the job is committed; the sweeper re-sends it
                log.exception("could not send job %s to the broker; the sweeper will retry", wakeup.job_id)
