"""The supervisor's watchdogs with real processes: a stalled child (SIGSTOP) is diagnosed, killed and retried as an
infrastructure failure; an attempt past resources.max_runtime_s fails with reason `timeout`.

The spec's max_runtime_s is at least 60 s and no worker setting shortens it, so the timeout job is started first
(module fixture, its child SIGSTOPped once running so it takes no CPU) and runs its 60 s alongside the stall test.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.models import FailureReason, JobStatus
from tests.worker.conftest import Stack, job_spec, pid_alive, wait_until

S = JobStatus
STALL_S = 8  # the stall worker's LINGUDISTILL_WORKER_STALL_TIMEOUT_S; a normal step is far shorter
STALL_STEPS = {"max_steps": 30, "checkpoint_every": 4}
MAX_RUNTIME_S = 60  # the spec's minimum


@dataclass
class TimeoutJob:
    job_id: str
    child: int


@pytest.fixture(scope="module", autouse=True)
def timeout_job(stack: Stack, tiny_world: Path) -> Iterator[TimeoutJob]:
    """A job with max_runtime_s=60 whose child hangs (SIGSTOP) once it is running; the default stall timeout
    (1800 s) is far away, so only the runtime limit can end it."""
    queue = f"{stack.queue}-to-{secrets.token_hex(2)}"
    stack.worker(queue=queue)
    spec = job_spec(tiny_world, queue, max_steps=5000, checkpoint_every=1000)
    spec["resources"]["max_runtime_s"] = MAX_RUNTIME_S
    job_id = stack.submit(spec)
    stack.wait_status(job_id, {S.running}, timeout=60)
    child = stack.child_pids(job_id)[0]
    os.killpg(child, signal.SIGSTOP)  # the child leads its own process group (worker.child._detach)
    yield TimeoutJob(job_id, child)
    if pid_alive(child):  # only if the test failed: do not leave a stopped process behind
        os.killpg(child, signal.SIGKILL)


def test_a_stalled_child_is_dumped_killed_and_retried_from_its_checkpoint(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    stack.worker(
        queue=private_queue, LINGUDISTILL_WORKER_STALL_TIMEOUT_S=str(STALL_S), LINGUDISTILL_WORKER_STACK_DUMP_WAIT_S="1"
    )
    job_id = stack.submit(job_spec(tiny_world, private_queue, **STALL_STEPS))
    wait_until(lambda: stack.checkpoints(job_id), 90, "a complete checkpoint")
    assert stack.job(job_id).status is S.running
    child = stack.child_pids(job_id)[0]
    os.killpg(child, signal.SIGSTOP)  # no more steps

    stalled = wait_until(lambda: stack.events(job_id, "stalled"), 30, "the stalled event")
    wait_until(lambda: not pid_alive(child), 10, "the stopped child to be killed")
    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=120)

    assert job.status is S.succeeded, job.failure_message
    assert job.attempt == 2
    assert len(stalled) == 1 and stalled[0].attempt == 1
    data = stalled[0].data  # seconds is rounded to 0.1 s: just past the limit reads as the limit
    assert data["seconds"] >= STALL_S and 0 < data["step"] < STALL_STEPS["max_steps"]
    # A stopped process cannot run faulthandler's SIGUSR1 handler (the signal stays pending until the SIGKILL), so
    # the dump file the child opened at start is still empty: the supervisor records "" rather than failing.
    assert data["stack"] == ""
    failed = stack.events(job_id, "attempt_failed")
    assert len(failed) == 1 and failed[0].attempt == 1
    assert "stalled: no step for" in failed[0].data["message"]
    resumed = stack.events(job_id, "resuming")
    assert len(resumed) == 1 and 0 < resumed[0].data["step"] <= data["step"]
    assert len(stack.child_pids(job_id)) == 2
    steps = [step for step, _ in stack.metrics(job_id)]
    assert steps == list(range(1, STALL_STEPS["max_steps"] + 1))  # unique and contiguous


def test_an_attempt_past_max_runtime_fails_with_timeout(stack: Stack, timeout_job: TimeoutJob) -> None:
    job = stack.wait_status(timeout_job.job_id, {S.succeeded, S.failed, S.queued}, timeout=MAX_RUNTIME_S + 30)

    assert job.status is S.failed and job.failure_reason is FailureReason.timeout
    assert job.failure_message == f"the attempt exceeded max_runtime_s ({MAX_RUNTIME_S} s)"
    assert job.attempt == 1  # not retried
    wait_until(lambda: not pid_alive(timeout_job.child), 5, "the child to be gone")
    assert stack.child_pids(timeout_job.job_id) == [timeout_job.child]
    assert stack.events(timeout_job.job_id, "stalled") == []
