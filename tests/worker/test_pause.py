"""Pause and resume on a real worker: the job stops at a checkpoint of the step it paused at and frees its worker;
a resume continues exactly as an uninterrupted run, and pauses spend no attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.models import FailureReason, JobStatus
from tests.worker.conftest import Stack, job_spec, uninterrupted_losses, wait_until

S = JobStatus
# Steps take milliseconds: enough of them that a pause (seen within a second) lands mid-run. No periodic
# checkpoint: every checkpoint of the job is a pause's.
LONG = {"max_steps": 2000, "checkpoint_every": 10_000}


@pytest.fixture(scope="module")
def reference_losses(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    return uninterrupted_losses(tiny_world, tmp_path_factory.mktemp("reference"), **LONG)


def _pause_after(stack: Stack, job_id: str, step: int) -> int:
    """Pause once the job trained past `step`; returns the step it paused at."""
    wait_until(lambda: (stack.job(job_id).step or 0) > step, 90, f"step {step}")
    assert stack.pause(job_id).status is S.pausing
    job = stack.wait_status(job_id, {S.paused, S.failed, S.succeeded}, timeout=60)
    assert job.status is S.paused, job.failure_message
    assert job.lease_owner is None and job.lease_expires_at is None
    assert job.resume_checkpoint_step is not None and job.resume_checkpoint_step > step
    assert stack.checkpoints(job_id)[-1].step == job.resume_checkpoint_step  # the checkpoint of the paused step
    return job.resume_checkpoint_step


def test_pause_frees_the_worker_and_two_resumes_finish_exactly_within_one_attempt(
    stack: Stack, tiny_world: Path, private_queue: str, reference_losses: dict[int, float]
) -> None:
    stack.worker("--concurrency=1", queue=private_queue)
    job_id = stack.submit(job_spec(tiny_world, private_queue, **LONG), max_attempts=1)

    first = _pause_after(stack, job_id, 3)
    other = stack.submit(job_spec(tiny_world, private_queue))  # the one slot is free while the job is paused
    assert stack.wait_status(other, {S.succeeded, S.failed}, timeout=90).status is S.succeeded
    assert stack.job(job_id).status is S.paused

    stack.resume(job_id)
    second = _pause_after(stack, job_id, first + 3)
    stack.resume(job_id)
    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=120)

    assert job.status is S.succeeded, job.failure_message
    assert (job.attempt, job.max_attempts) == (3, 3)  # each paused attempt was given back
    assert [e.data["step"] for e in stack.events(job_id, "resuming")] == [first, second]
    assert [c.step for c in stack.checkpoints(job_id)] == [first, second]
    losses = stack.metrics(job_id)
    assert [step for step, _ in losses] == list(range(1, LONG["max_steps"] + 1))
    assert dict(losses) == pytest.approx(reference_losses, rel=1e-4)  # equal to the uninterrupted run


def test_a_pause_while_validating_stops_before_training_and_cancel_ends_the_paused_job(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    stack.worker("--concurrency=1", queue=private_queue)
    job_id = stack.submit(job_spec(tiny_world, private_queue, **LONG))
    stack.wait_status(job_id, {S.validating}, timeout=60)
    assert stack.pause(job_id).status is S.pausing

    job = stack.wait_status(job_id, {S.paused, S.failed, S.succeeded}, timeout=60)
    assert job.status is S.paused, job.failure_message
    # once validation ended, before any step; or at a step's checkpoint if training began before the pause was seen
    steps = [c.step for c in stack.checkpoints(job_id)]
    assert job.resume_checkpoint_step == (steps[-1] if steps else None)
    assert max((step for step, _ in stack.metrics(job_id)), default=0) == (job.resume_checkpoint_step or 0)

    stack.cancel(job_id)
    job = stack.job(job_id)
    assert job.status is S.cancelled and job.failure_reason is FailureReason.cancelled
