"""Scale-out: three `python -m worker` processes on one Redis and one Postgres, standing in for three hosts.

Six tiny jobs go to one queue that only these workers read. The test shows that
    the jobs spread across the workers (each claim records its worker: jobs.lease_owner while the lease is held,
        and the `worker` of the job's `status: validating` and `child_started` events, kept after the job ends);
    no job runs twice: one claim (attempt), one training child and one set of step metrics per job;
    kill -9 of one worker mid-job moves its job to another worker, which resumes from the last complete
        checkpoint and succeeds (the dead worker's child dies with it).
bench/scale_out.py reuses the helpers below to print figures.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from service.models import JobStatus
from tests.worker.conftest import Stack, WorkerProcess, job_spec, pid_alive, wait_until

S = JobStatus
WORKERS, JOBS = 3, 6
TRAINING = {"max_steps": 20, "checkpoint_every": 4}


def start_workers(stack: Stack, count: int, queue: str, **env: str) -> list[WorkerProcess]:
    """`count` workers started at once (each waits for its own "ready."), torn down with the stack."""
    environment = {**stack.env, "LINGUDISTILL_WORKER_QUEUES": queue, **env}
    first = len(stack.workers)
    workers = [WorkerProcess(environment, stack.logs / f"worker-{first + i}.log") for i in range(count)]
    stack.workers.extend(workers)
    threads = [threading.Thread(target=worker.start) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(worker.process is not None and worker.process.poll() is None for worker in workers)
    return workers


def worker_pid(worker_id: str) -> int:
    """runtime.Runtime.worker_id is host:pid:random; with the solo pool the task runs in the worker's process."""
    return int(worker_id.rsplit(":", 2)[1])


@dataclass(frozen=True)
class Claim:
    attempt: int
    worker: str
    at: datetime


def claims(stack: Stack, job_id: str) -> list[Claim]:
    """Every claim of the job, in order: the `status: validating` event each attempt's claim writes."""
    return [
        Claim(e.attempt, e.data["worker"], e.created_at)
        for e in stack.events(job_id, "status")
        if e.data["status"] == S.validating.value
    ]


def running_with_checkpoint(stack: Stack, job_ids: list[str], max_steps: int) -> str | None:
    """A job that is running, has a complete checkpoint, and still has steps to go: a job to take a worker from."""
    for job_id in job_ids:
        job = stack.job(job_id)
        if job.status is S.running and (job.step or 0) < max_steps - 8 and stack.checkpoints(job_id):
            return job_id
    return None


def check_ran_once(stack: Stack, job_id: str, attempts: int, max_steps: int) -> None:
    """`attempts` claims on distinct workers, one child each, each step's metrics once, and the job succeeded."""
    job = stack.job(job_id)
    assert job.status is S.succeeded, (job_id, job.failure_message)
    assert job.attempt == attempts
    assert [c.attempt for c in claims(stack, job_id)] == list(range(1, attempts + 1))
    assert len({c.worker for c in claims(stack, job_id)}) == attempts
    started = stack.events(job_id, "child_started")
    assert [e.attempt for e in started] == list(range(1, attempts + 1))  # one training child per attempt
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, max_steps + 1))  # unique, contiguous


def test_jobs_spread_run_once_and_a_killed_workers_job_moves(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    workers = start_workers(stack, WORKERS, private_queue)
    by_pid = {worker.process.pid: worker for worker in workers if worker.process is not None}
    job_ids = [stack.submit(job_spec(tiny_world, private_queue, **TRAINING)) for _ in range(JOBS)]

    mid_run = lambda: running_with_checkpoint(stack, job_ids, TRAINING["max_steps"])  # noqa: E731
    victim = wait_until(mid_run, 60, "a job mid-run", interval=0.25)
    owner = claims(stack, victim)[0].worker
    assert stack.job(victim).lease_owner == owner  # the lease names the worker that holds it
    child = stack.child_pids(victim)[0]
    by_pid[worker_pid(owner)].kill9()
    wait_until(lambda: not pid_alive(child), 10, "the killed worker's training child to die with it")

    for job_id in job_ids:
        stack.wait_status(job_id, {S.succeeded, S.failed, S.cancelled}, timeout=90)

    # spread: every worker claimed jobs; the killed one only the job it was running (and maybe ones before it)
    first_claims = {job_id: claims(stack, job_id)[0].worker for job_id in job_ids}
    assert {worker_pid(w) for w in first_claims.values()} == set(by_pid)
    # no job ran twice: one claim, one child, each step once; the victim: a second claim elsewhere, resumed
    for job_id in job_ids:
        check_ran_once(stack, job_id, 2 if job_id == victim else 1, TRAINING["max_steps"])
    second = claims(stack, victim)[1].worker
    assert worker_pid(second) != worker_pid(owner) and worker_pid(second) in by_pid
    resumed = stack.events(victim, "resuming")
    assert len(resumed) == 1 and resumed[0].attempt == 2 and resumed[0].data["step"] >= TRAINING["checkpoint_every"]
    lost = ["queued", "validating", "running", "queued"]  # re-queued by a sweeper once the dead worker's lease expired
    assert stack.statuses(victim) == [*lost, "validating", "running", "evaluating", "succeeded"]
    # while a worker runs a job it runs no other: its claims of different jobs do not overlap in time
    for pid in by_pid:
        spans = sorted(_spans(stack, job_ids, pid))
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), spans


def _spans(stack: Stack, job_ids: list[str], pid: int) -> list[tuple[datetime, datetime]]:
    """(claim, end of that attempt) of every attempt the worker `pid` made."""
    spans = []
    for job_id in job_ids:
        events = stack.events(job_id)
        for claim in claims(stack, job_id):
            if worker_pid(claim.worker) != pid:
                continue
            later = [e for e in events if e.created_at > claim.at and e.type == "status"]
            ends = [e.created_at for e in later if e.data["status"] in {"succeeded", "queued", "failed"}]
            spans.append((claim.at, ends[0] if ends else datetime.max))
    return spans
