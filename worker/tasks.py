"""The one task: a wake-up carrying a job id. The supervisor does the work; duplicates are harmless."""

from __future__ import annotations

import logging

from service.dispatch import RUN_JOB_TASK
from worker import supervisor
from worker.celery_app import app
from worker.runtime import get_runtime

log = logging.getLogger(__name__)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    """Claim the job's lease (attempt += 1) and supervise its training child; a leased or final job is skipped."""
    outcome = supervisor.run(job_id, get_runtime())
    log.info("job %s: %s", job_id, outcome.value)
    return outcome.value
