"""The one task: a wake-up carrying a job id. The supervisor does the work; duplicates are harmless."""

from __future__ import annotations

import logging

from service.dispatch import RUN_JOB_TASK
from service.sweeps.service import finalise_after_job
from worker import supervisor
from worker.celery_app import app
from worker.runtime import get_runtime

log = logging.getLogger(__name__)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    """Claim the job's lease (attempt += 1) and supervise its training child; a leased or final job is skipped."""
    rt = get_runtime()
    outcome = supervisor.run(job_id, rt)
    log.info("job %s: %s", job_id, outcome.value)
    if outcome in FINAL_OUTCOMES:
        try:  # the job's sweep ends with its last arm; GET /v1/sweeps/{id} finishes it otherwise
            finalise_after_job(rt.sessions, rt.storage, job_id)
        except Exception:
            log.exception("job %s: finishing its sweep", job_id)
    return outcome.value


FINAL_OUTCOMES = {supervisor.Outcome.succeeded, supervisor.Outcome.failed, supervisor.Outcome.cancelled}
