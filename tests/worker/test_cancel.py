"""Cancel while queued, validating and running: `cancelled` within 10 s, and the training child is gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.models import FailureReason, JobStatus
from tests.worker.conftest import Stack, WorkerProcess, job_spec, pid_alive, wait_until

S = JobStatus
CANCEL_WITHIN_S = 10.0


def test_cancel_while_queued(stack: Stack, tiny_world: Path, private_queue: str) -> None:
    job_id = stack.submit(job_spec(tiny_world, private_queue))  # nobody reads this queue yet

    stack.cancel(job_id)
    stack.worker(queue=private_queue)  # the message arrives after the cancel
    time.sleep(2)

    job = stack.job(job_id)
    assert job.status is S.cancelled and job.attempt == 0
    assert stack.child_pids(job_id) == []


@pytest.mark.parametrize("stage", [S.validating, S.running])
def test_cancel_while_active(stack: Stack, shared_worker: WorkerProcess, tiny_world: Path, stage: JobStatus) -> None:
    job_id = stack.submit(job_spec(tiny_world, stack.queue, max_steps=2000, checkpoint_every=1000))
    stack.wait_status(job_id, {stage}, timeout=60)

    started = time.monotonic()
    stack.cancel(job_id)
    job = stack.wait_status(job_id, {S.cancelled, S.failed, S.succeeded}, timeout=CANCEL_WITHIN_S)

    assert time.monotonic() - started < CANCEL_WITHIN_S
    assert job.status is S.cancelled and job.failure_reason is FailureReason.cancelled
    pids = stack.child_pids(job_id)
    assert len(pids) == 1
    wait_until(lambda: not pid_alive(pids[0]), 2, "the child to be gone")
