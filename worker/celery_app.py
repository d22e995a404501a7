"""The Celery app of the workers. Every setting that matters for hour-long GPU jobs is written out with its reason.

A message is only a wake-up carrying a job id; the job's row in the database (lease, attempt, status) decides
what happens, so Celery's at-least-once delivery is safe: a duplicate finds the job leased or final and does
nothing. `celery -A worker.celery_app worker` and `lingudistill worker` both use `app` below.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from service.dispatch import RUN_JOB_TASK, celery_broker_config
from service.settings import Settings, get_settings
from worker.settings import WorkerSettings, get_worker_settings

DEFAULT_QUEUE = "gpu"
MIN_VISIBILITY_TIMEOUT_S = 3600


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def transport_options(settings: Settings) -> dict[str, Any]:
    options = celery_broker_config(settings)["broker_transport_options"]
    if not is_redis(settings.broker_url_resolved):
        # kombu's filesystem transport (embedded default) polls its folder; it has no priorities and no
        # redelivery, so a lost message is healed by the sweeper re-sending unclaimed queued jobs.
        return {**options, "polling_interval": 0.5}
    return {
        **options,
        # Longer than the lease (and never under an hour): Redis re-delivers an unacked message after this, and
        # by then the dead worker's lease has long expired, so the redelivery meets a re-queued or final job.
        "visibility_timeout": max(MIN_VISIBILITY_TIMEOUT_S, 10 * settings.lease_s),
        # Priorities on Redis are separate lists per step, polled most urgent first: all ten steps, set in
        # service.dispatch.celery_broker_config because the API's sender must use the very same ones.
    }


def celery_config(settings: Settings, worker: WorkerSettings) -> dict[str, Any]:
    queues = [q.strip() for q in worker.queues.split(",") if q.strip()] or [DEFAULT_QUEUE]
    return {
        "broker_url": settings.broker_url_resolved,
        "broker_transport_options": transport_options(settings),
        # Ack only after the task returns: a worker that dies mid-job leaves its message to be re-delivered.
        "task_acks_late": True,
        # A pool process killed mid-task (OOM killer, kill -9) puts the message back instead of acking it.
        "task_reject_on_worker_lost": True,
        # Reserve one message per slot: a worker busy for hours must not sit on jobs another GPU could run.
        "worker_prefetch_multiplier": 1,
        # One job per GPU; `lingudistill worker --concurrency N` runs N (thread) slots for N GPUs.
        "worker_concurrency": 1,
        # A broker reconnect must not cancel a training job: the database lease guards it, not the connection.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Keep retrying the broker forever, also at start-up: Redis restarts must not take workers down.
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # One queue per GPU kind (spec.resources.queue); the API names the queue on every message, this route
        # only covers messages sent without one. Unknown queues are created on first use.
        "task_default_queue": queues[0],
        "task_routes": {RUN_JOB_TASK: {"queue": queues[0]}},
        "task_create_missing_queues": True,
        # Priorities: 0..9 on every transport; on Redis 0 is served first (see REDIS_PRIORITY_STEPS).
        "task_queue_max_priority": 9,
        "task_default_priority": 4,
        # Outcomes live in the jobs table; a result backend would only duplicate them.
        "task_ignore_result": True,
        # No Celery time limit: the supervisor enforces spec.resources.max_runtime_s and classifies it `timeout`.
        "task_time_limit": None,
        "task_soft_time_limit": None,
        # Task events are chatter for monitoring tools we do not use; the job events table has it all.
        "worker_send_task_events": False,
    }


def make_app(settings: Settings | None = None, worker: WorkerSettings | None = None) -> Celery:
    app = Celery("lingudistill-worker", include=["worker.tasks"])
    app.conf.update(celery_config(settings or get_settings(), worker or get_worker_settings()))
    return app


app = make_app()


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    from worker.sweeper import start_sweeper

    start_sweeper()


@signals.worker_shutdown.connect
def _stop_sweeper(sender: Any = None, **_: Any) -> None:
    from worker.sweeper import stop_sweeper

    stop_sweeper()
