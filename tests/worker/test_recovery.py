"""Crashes: kill -9 of the worker and of the training child resume from the last checkpoint; a crash loop stops."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from service.models import FailureReason, JobStatus
from tests.worker.conftest import Stack, job_spec, pid_alive, uninterrupted_losses, wait_until

S = JobStatus
# Long enough that a kill at an early checkpoint lands mid-run even on an idle machine.
LONG = {"max_steps": 60, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def reference_losses(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """The same job, uninterrupted, in this process."""
    return uninterrupted_losses(tiny_world, tmp_path_factory.mktemp("reference"), **LONG)


def _mid_run(stack: Stack, job_id: str, after_step: int) -> None:
    """Wait for a complete checkpoint past `after_step` while training still has steps to go."""
    wait_until(lambda: [c for c in stack.checkpoints(job_id) if c.step > after_step], 90, "a complete checkpoint")
    assert stack.job(job_id).status is S.running


def test_kill_9_of_the_child_then_of_the_worker_resumes_each_time(
    stack: Stack, tiny_world: Path, private_queue: str, reference_losses: dict[int, float]
) -> None:
    """One job, two crashes (to keep the suite short): the training child, then the whole worker."""
    worker = stack.worker(queue=private_queue)
    job_id = stack.submit(job_spec(tiny_world, private_queue, **LONG))
    _mid_run(stack, job_id, 0)

    os.kill(stack.child_pids(job_id)[0], signal.SIGKILL)  # the supervisor re-queues at once
    wait_until(lambda: len(stack.child_pids(job_id)) == 2, 30, "the second attempt")
    _mid_run(stack, job_id, stack.checkpoints(job_id)[-1].step)
    worker.kill9()  # the sweeper of the next worker re-queues the job once its lease expires
    child = stack.child_pids(job_id)[1]
    wait_until(lambda: not pid_alive(child), 10, "the orphaned child to die with its worker")
    stack.worker(queue=private_queue)

    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=120)
    assert job.status is S.succeeded, job.failure_message
    assert job.attempt == 3
    resumed = [e.data["step"] for e in stack.events(job_id, "resuming")]
    assert len(resumed) == 2 and 0 < resumed[0] < resumed[1]
    assert "SIGKILL" in stack.events(job_id, "attempt_failed")[0].data["message"]
    losses = stack.metrics(job_id)
    assert [step for step, _ in losses] == list(range(1, LONG["max_steps"] + 1))  # unique and contiguous
    assert dict(losses) == pytest.approx(reference_losses, rel=1e-4)  # equal to the uninterrupted run


def test_a_crash_loop_stops_after_max_attempts(stack: Stack, tiny_world: Path, private_queue: str) -> None:
    stack.worker(queue=private_queue)
    job_id = stack.submit(job_spec(tiny_world, private_queue), max_attempts=2)
    stop = threading.Event()
    threading.Thread(target=_kill_every_child, args=(stack, job_id, stop), daemon=True).start()

    job = stack.wait_status(job_id, {S.failed, S.succeeded}, timeout=90)
    stop.set()

    assert job.status is S.failed
    assert job.failure_reason is FailureReason.infrastructure
    assert job.attempt == 2
    assert "gave up after 2 attempts" in (job.failure_message or "")


def _kill_every_child(stack: Stack, job_id: str, stop: threading.Event) -> None:
    killed: set[int] = set()
    while not stop.wait(0.05):
        for pid in set(stack.child_pids(job_id)) - killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
