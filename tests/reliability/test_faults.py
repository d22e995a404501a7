"""Faults with real processes that tests/worker does not already cover (see docs/reliability.md for those):
a Postgres crash (`pg_ctl stop -m immediate`) mid-job, a worker frozen past its lease (SIGSTOP/SIGCONT), and
storage vanishing during checkpoint uploads. After each: the job ends (or resumes) and succeeds, metrics are
unique and contiguous, every complete checkpoint verifies against its sha256 manifest, and the API answers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from service.lifecycle import JobStatus
from service.models import Checkpoint, Job, JobEvent
from tests.reliability.conftest import (
    FINAL,
    FlakyProxy,
    PrivatePostgres,
    api_client,
    assert_invariants,
    metric_rows,
)
from tests.worker.conftest import Stack, job_spec, make_stack, pid_alive, wait_until

S = JobStatus
LONG = {"max_steps": 24, "checkpoint_every": 4}


def _wait_checkpoint(stack: Stack, job_id: str, after_step: int = 0) -> int:
    wait_until(lambda: [c for c in stack.checkpoints(job_id) if c.step > after_step], 90, "a complete checkpoint")
    return stack.checkpoints(job_id)[-1].step


def test_postgres_crash_mid_job_the_job_resumes_and_succeeds(
    stack: Stack, private_postgres: PrivatePostgres, tiny_world: Path, tmp_path: Path
) -> None:
    own = make_stack(private_postgres.create_database(), stack.settings.broker_url or "", stack.storage.bucket,
                     stack.settings.s3_endpoint_url or "", tmp_path, stack.queue + "-pg")  # fmt: skip
    worker = own.worker()
    try:
        api = api_client(own)  # its connection pool is filled before the crash and must heal after it
        job_id = own.submit(job_spec(tiny_world, own.queue, **LONG))
        _wait_checkpoint(own, job_id)
        assert api.get(f"/v1/jobs/{job_id}").status_code == 200

        private_postgres.stop("immediate")  # a crash: no checkpoint, no clean shutdown of connections
        time.sleep(1.0)
        private_postgres.start()

        job = own.wait_status(job_id, FINAL, timeout=150)
        assert job.status is S.succeeded, job.failure_message
        assert worker.process is not None and worker.process.poll() is None  # the worker survived the outage
        assert_invariants(own, job_id, api, tmp_path, LONG["max_steps"])
        if job.attempt > 1:  # the outage cost the attempt: the next one resumed from a complete checkpoint
            assert [e.data["step"] for e in own.events(job_id, "resuming")], "a new attempt started from scratch"
    finally:
        worker.stop()


def _snapshot(stack: Stack, job_id: str) -> dict[str, object]:
    """Everything a stale attempt could damage: the job row, metrics, checkpoint rows and stored objects."""
    with stack.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        row = (job.status, job.attempt, job.step, job.finished_at, job.report, job.failure_message)
        checkpoints = [
            (c.step, c.attempt, c.storage_prefix, c.manifest, c.complete)
            for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step))
        ]
    objects = {key: hashlib.sha256(b"".join(stack.storage.iter_bytes(key))).hexdigest()
               for key in stack.storage.list(f"jobs/{job_id}")}  # fmt: skip
    return {"job": row, "metrics": metric_rows(stack, job_id), "checkpoints": checkpoints, "objects": objects}


def test_a_worker_frozen_past_its_lease_is_fenced_out_after_sigcont(
    stack: Stack, tiny_world: Path, private_queue: str, tmp_path: Path
) -> None:
    api = api_client(stack)
    frozen = stack.worker(queue=private_queue)
    assert frozen.process is not None
    job_id = stack.submit(job_spec(tiny_world, private_queue, **LONG))
    _wait_checkpoint(stack, job_id)
    old_child = stack.child_pids(job_id)[0]

    frozen.process.send_signal(signal.SIGSTOP)  # its lease (5 s) expires; the other worker's sweeper re-queues
    try:
        stack.worker(queue=private_queue)
        job = stack.wait_status(job_id, FINAL, timeout=150)
        assert job.status is S.succeeded and job.attempt == 2, (job.status, job.attempt, job.failure_message)
        before = _snapshot(stack, job_id)
        last_event = stack.events(job_id)[-1].id
    finally:
        frozen.process.send_signal(signal.SIGCONT)

    # the old attempt wakes up, finds its fencing token stale, kills its child and ends as fenced_out
    log = frozen.log
    wait_until(lambda: "fenced_out" in log.read_text(errors="replace"), 60, "the stale attempt to end fenced out")
    wait_until(lambda: not pid_alive(old_child), 15, "the stale attempt's child to die")
    assert frozen.process.poll() is None  # the worker itself carries on
    time.sleep(1.0)  # any late write of the stale attempt would land now
    after = _snapshot(stack, job_id)
    # the stale attempt may finish an upload it had begun, into its own attempt-1 folders, which nothing references
    own = {k: v for k, v in after["objects"].items() if "/attempt-1/" in k and k not in before["objects"]}
    after["objects"] = {k: v for k, v in after["objects"].items() if k not in own}
    assert after == before, "the stale attempt changed the job"
    assert all(f"/attempt-{c[1]}" in c[2] for c in after["checkpoints"])  # each row names its own attempt's files
    with stack.sessions() as session:
        late = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > last_event, JobEvent.type == "status")
        ).all()
    assert late == []
    assert_invariants(stack, job_id, api, tmp_path, LONG["max_steps"])
    resumed = [e.data["step"] for e in stack.events(job_id, "resuming")]
    assert len(resumed) == 1 and resumed[0] > 0


def test_storage_outage_during_checkpoint_upload_never_resumes_from_an_incomplete_checkpoint(
    stack: Stack, flaky_s3: FlakyProxy, tiny_world: Path, private_queue: str, tmp_path: Path
) -> None:
    api = api_client(stack)
    # the worker reaches S3 through the proxy; few client retries so an outage fails an upload quickly
    stack.worker(queue=private_queue, LINGUDISTILL_S3_ENDPOINT_URL=flaky_s3.url, AWS_MAX_ATTEMPTS="2",
                 AWS_RETRY_MODE="standard")  # fmt: skip
    job_id = stack.submit(job_spec(tiny_world, private_queue, **LONG))
    wait_until(lambda: stack.events(job_id, "training"), 90, "training to begin")

    flaky_s3.down()  # before the first checkpoint upload: it fails, possibly half-way through its files
    failed = wait_until(lambda: stack.events(job_id, "checkpoint_upload_failed"), 60, "a failed checkpoint upload")
    failed_step = failed[0].data["step"]
    flaky_s3.up()
    assert all(c.step != failed_step for c in stack.checkpoints(job_id)), "a failed upload was recorded complete"

    child = stack.child_pids(job_id)[0]
    if stack.job(job_id).status is S.running and pid_alive(child):
        os.kill(child, signal.SIGKILL)  # force a resume now, with a half-uploaded checkpoint in storage
    job = stack.wait_status(job_id, FINAL, timeout=150)
    assert job.status is S.succeeded, job.failure_message
    resumed = [e.data["step"] for e in stack.events(job_id, "resuming")]
    assert failed_step not in resumed[:1]  # the next attempt never starts from the failed upload
    assert set(resumed) <= {c.step for c in stack.checkpoints(job_id)}  # only ever from complete checkpoints
    assert_invariants(stack, job_id, api, tmp_path, LONG["max_steps"])


def test_a_stale_attempts_late_upload_never_touches_the_current_checkpoint(stack: Stack, tmp_path: Path) -> None:
    """The upload a frozen attempt had begun finishes after SIGCONT: it lands in its own attempt's folder."""
    from lingudistill.checkpoint import write_manifest
    from worker.transfers import download_checkpoint, upload_checkpoint

    def folder(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "model.safetensors").write_bytes(content)
        write_manifest(path, 8)
        return path

    job_id = f"job_stale_{os.getpid()}"
    current = upload_checkpoint(stack.storage, job_id, 8, folder("current", b"attempt two"), attempt=2)
    upload_checkpoint(stack.storage, job_id, 8, folder("stale", b"attempt one, late"), attempt=1)
    download_checkpoint(stack.storage, current.prefix, current.manifest, tmp_path / "check")  # still verifies
    assert (tmp_path / "check" / "model.safetensors").read_bytes() == b"attempt two"


def test_a_worker_frozen_inside_a_transaction_does_not_block_the_sweeper(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    """A worker stopped between two statements of a transaction holds its job row's lock: the server ends that
    session after lease_s, so the sweeper re-queues the job instead of waiting on the lock forever."""
    import threading

    from service.jobs import repository
    from worker.runtime import build_runtime
    from worker.settings import WorkerSettings
    from worker.sweeper import requeue_expired

    rt = build_runtime(stack.settings, WorkerSettings(queues=private_queue))
    job_id = stack.submit(job_spec(tiny_world, private_queue))  # no worker reads this queue
    frozen = rt.sessions()
    claim = repository.claim_job(frozen, job_id, "frozen-worker", stack.settings.lease_s)
    frozen.commit()
    assert claim is not None
    repository.record_metrics(frozen, job_id, claim.attempt, [(1, "loss", 1.0)])  # locks the row, no commit
    sweep = threading.Thread(target=requeue_expired, args=(rt,), daemon=True)
    time.sleep(stack.settings.lease_s + 0.5)  # the lease expires while the "frozen" transaction holds the lock
    sweep.start()
    sweep.join(timeout=4 * stack.settings.lease_s)
    assert not sweep.is_alive(), "the sweeper is stuck behind a frozen worker's row lock"
    with pytest.raises(DBAPIError):  # the frozen worker's next statement fails: it cannot write any more
        repository.record_metrics(frozen, job_id, claim.attempt, [(2, "loss", 1.0)])
    with contextlib.suppress(Exception):
        frozen.close()
    assert stack.job(job_id).status is S.queued and stack.job(job_id).attempt == claim.attempt
