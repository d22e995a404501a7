"""Faults a healthy job must survive without spending an attempt, and stale attempts that must not do harm (issue 14).

Each test runs real worker processes against a private Postgres or a storage proxy that can vanish. The recovery
times they print (run with -s) are the figures in docs/reliability.md; no test asserts a time.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from service.db import session_scope
from service.jobs import repository
from service.models import JobStatus
from tests.reliability.conftest import (
    FINAL,
    FlakyProxy,
    PrivatePostgres,
    api_client,
    assert_invariants,
)
from tests.worker.conftest import Stack, job_spec, make_stack, pid_alive, wait_until

S = JobStatus
OUTAGE_S = 8.0


def _step(stack: Stack, job_id: str) -> int:
    return stack.job(job_id).step or 0


def _report(what: str, seconds: float) -> None:
    print(f"\n[recovery] {what}: {seconds:.1f} s")  # the figures of docs/reliability.md (pytest -s)


def test_three_postgres_outages_during_a_job_cost_no_attempt(
    stack: Stack, private_postgres: PrivatePostgres, tiny_world: Path, tmp_path: Path
) -> None:
    own = make_stack(private_postgres.create_database(), stack.settings.broker_url or "", stack.storage.bucket,
                     stack.settings.s3_endpoint_url or "", tmp_path, stack.queue + "-outage")  # fmt: skip
    # The lease outlives each outage: a lease that expires while the database is away is the sweeper's to judge.
    worker = own.worker(LINGUDISTILL_LEASE_S="30")
    steps = 150
    try:
        api = api_client(own)
        job_id = own.submit(job_spec(tiny_world, own.queue, max_steps=steps, checkpoint_every=25))
        wait_until(lambda: _step(own, job_id) >= 3, 120, "the first steps")
        for outage in range(3):
            assert own.job(job_id).status is S.running, f"the job ended before outage {outage + 1}"
            private_postgres.stop("fast")  # every connection of the worker breaks; writes fail until it is back
            time.sleep(OUTAGE_S)
            private_postgres.start()
            back, before = time.monotonic(), _step(own, job_id)
            wait_until(lambda before=before: _step(own, job_id) > before, 60, "steps to be recorded again")
            _report(
                f"Postgres outage {outage + 1} ({OUTAGE_S:.0f} s): step recorded again after", time.monotonic() - back
            )
            wait_until(lambda before=before: _step(own, job_id) >= before + 3, 60, "training to go on")

        job = own.wait_status(job_id, FINAL, timeout=300)
        assert job.status is S.succeeded and job.attempt == 1, (job.status, job.attempt, job.failure_message)
        assert own.events(job_id, "attempt_failed") == []
        assert worker.process is not None and worker.process.poll() is None
        assert_invariants(own, job_id, api, tmp_path, steps)  # every step's metrics once: none lost in an outage
    finally:
        worker.stop()


def test_a_frozen_workers_child_stops_itself_and_no_live_folder_is_deleted(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    frozen = stack.worker(queue=private_queue)
    assert frozen.process is not None
    job_id = stack.submit(job_spec(tiny_world, private_queue, max_steps=40, checkpoint_every=4))
    wait_until(lambda: stack.checkpoints(job_id), 120, "a complete checkpoint")
    old_child = stack.child_pids(job_id)[0]
    old_folder = Path(stack.env["LINGUDISTILL_WORKER_SCRATCH_DIR"]) / job_id / "attempt-1"
    assert old_folder.is_dir()

    frozen.process.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # the child misses its supervisor's pulse for a lease (5 s) and ends itself, before anyone else trains
        wait_until(lambda: not pid_alive(old_child), 30, "the frozen worker's child to stop itself")
        _report("frozen worker: its training child stopped itself after", time.monotonic() - frozen_at)
        stack.worker(queue=private_queue)  # on the same host (scratch folder): claims attempt 2 once the lease expired
        wait_until(lambda: len(stack.child_pids(job_id)) == 2, 120, "the new attempt to start its child")
        assert old_folder.is_dir(), "the new attempt deleted the frozen attempt's live working folder"
        job = stack.wait_status(job_id, FINAL, timeout=240)
        assert job.status is S.succeeded and job.attempt == 2, (job.status, job.attempt, job.failure_message)
        assert old_folder.is_dir()
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    # the old attempt wakes, finds itself fenced out, and removes its own folder
    wait_until(lambda: "fenced_out" in frozen.log.read_text(errors="replace"), 60, "the stale attempt to end")
    wait_until(lambda: not old_folder.exists(), 15, "the stale attempt to remove its own folder")
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, 41))


def test_a_stale_attempt_writes_no_event(stack: Stack, tiny_world: Path, private_queue: str) -> None:
    job_id = stack.submit(job_spec(tiny_world, private_queue))  # no worker reads this queue
    with session_scope(stack.sessions) as session:
        claim = repository.claim_job(session, job_id, "test-worker", stack.settings.lease_s)
    assert claim is not None and claim.attempt == 1
    with session_scope(stack.sessions) as session:
        stale = repository.append_event(session, job_id, 0, "evaluation", {"step": 2, "scores": {"x": 1.0}})
        current = repository.append_event(session, job_id, 1, "evaluation", {"step": 2, "scores": {"x": 1.0}})
    assert stale is None and current is not None
    assert [e.attempt for e in stack.events(job_id, "evaluation")] == [1]


def _no_checkpoint_job(stack: Stack, tiny_world: Path, queue: str) -> str:
    """A job that uses storage only for its final upload (local data, no checkpoint)."""
    return stack.submit(job_spec(tiny_world, queue, max_steps=6, checkpoint_every=1000))


def test_a_storage_outage_during_the_final_upload_is_waited_out(
    stack: Stack, flaky_s3: FlakyProxy, tiny_world: Path, private_queue: str
) -> None:
    stack.worker(queue=private_queue, LINGUDISTILL_S3_ENDPOINT_URL=flaky_s3.url, AWS_MAX_ATTEMPTS="2",
                 AWS_RETRY_MODE="standard")  # fmt: skip
    job_id = _no_checkpoint_job(stack, tiny_world, private_queue)
    wait_until(lambda: stack.events(job_id, "training"), 120, "training to begin")
    flaky_s3.down()
    wait_until(lambda: stack.events(job_id, "upload_retry"), 120, "a failed final upload")
    flaky_s3.up()
    back = time.monotonic()
    job = stack.wait_status(job_id, FINAL, timeout=120)
    _report("storage outage during the final upload: succeeded after", time.monotonic() - back)
    assert job.status is S.succeeded and job.attempt == 1, (job.status, job.attempt, job.failure_message)
    assert stack.events(job_id, "uploaded") and list(stack.storage.list(f"jobs/{job_id}/model"))


def test_a_retry_after_a_failed_final_upload_uploads_instead_of_training(
    stack: Stack, flaky_s3: FlakyProxy, tiny_world: Path, private_queue: str
) -> None:
    stack.worker(queue=private_queue, LINGUDISTILL_S3_ENDPOINT_URL=flaky_s3.url, AWS_MAX_ATTEMPTS="2",
                 AWS_RETRY_MODE="standard", LINGUDISTILL_WORKER_FINAL_UPLOAD_RETRY_S="2")  # fmt: skip
    job_id = _no_checkpoint_job(stack, tiny_world, private_queue)
    wait_until(lambda: stack.events(job_id, "training"), 120, "training to begin")
    flaky_s3.down()
    wait_until(lambda: stack.events(job_id, "attempt_failed"), 120, "the attempt to give the upload up")
    flaky_s3.up()
    back = time.monotonic()
    job = stack.wait_status(job_id, FINAL, timeout=120)
    _report("final upload given up, next attempt re-uploaded: succeeded after", time.monotonic() - back)

    assert job.status is S.succeeded and job.attempt == 2, (job.status, job.attempt, job.failure_message)
    assert [e.attempt for e in stack.events(job_id, "reuploading")] == [2]
    assert [e.attempt for e in stack.events(job_id, "training")] == [1], "the finished run was trained again"
    assert len(stack.child_pids(job_id)) == 1
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, 7))
    assert list(stack.storage.list(f"jobs/{job_id}/model")) and stack.events(job_id, "uploaded")
    uploaded = b"".join(stack.storage.iter_bytes(f"jobs/{job_id}/artifacts/metrics.jsonl")).decode()
    assert [json.loads(line)["step"] for line in uploaded.splitlines()] == list(range(1, 7))  # the kept run's


def test_a_lease_that_ran_out_during_a_database_outage_is_not_judged_until_one_lease_after_it(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """The sweeper's side of "an outage never spends an attempt": its own sweeps fail during the outage, and for one
    lease after the database is back it leaves leases alone while the supervisors renew theirs."""
    from service.dispatch import RecordingDispatcher
    from service.settings import Settings
    from worker.runtime import build_runtime
    from worker.settings import WorkerSettings
    from worker.sweeper import Sweeper

    url = private_postgres.create_database()
    settings = Settings(database_url=url, data_dir=tmp_path, lease_s=5, allowed_local_roots=[Path("/")])
    rt = build_runtime(settings, WorkerSettings())
    rt.dispatcher = RecordingDispatcher()
    job_id = _claimed_job(rt, lease_s=1)
    sweeper = Sweeper(rt)
    private_postgres.stop("immediate")
    assert sweeper.sweep(now=0.0) is None  # the outage: the sweep fails, and the lease runs out meanwhile
    time.sleep(1.5)
    private_postgres.start()
    back = wait_until(lambda: sweeper.sweep(now=10.0), 30, "a sweep after the outage")
    assert back.requeued == 0 and sweeper.sweep(now=14.9).requeued == 0  # within one lease of the return
    assert _status(rt, job_id) is JobStatus.running
    assert sweeper.sweep(now=15.0).requeued == 1  # a lease still expired one lease later: its worker is gone
    assert _status(rt, job_id) is JobStatus.queued


def _claimed_job(rt, lease_s: int) -> str:  # type: ignore[no-untyped-def]
    from lingudistill.spec import JobSpec
    from service.auth import Principal
    from service.dispatch import DispatchBuffer
    from service.jobs.service import create_job
    from service.keys.service import create_key

    spec = JobSpec.model_validate(
        {"name": "leased", "student": "/m/s", "teacher": "/m/t", "mixture": [{"name": "t", "uri": "/d.jsonl"}],
         "method": {"kd_sources": "none"}}
    )  # fmt: skip
    with session_scope(rt.sessions) as session:
        key = create_key(session, "sweeper-outage")
        job = create_job(session, Principal(key.tenant_id, key.key_id), spec, rt.settings, DispatchBuffer())
    with session_scope(rt.sessions) as session:
        claim = repository.claim_job(session, job.id, "worker-a", lease_s=lease_s)
        assert claim is not None
        assert repository.transition(session, job.id, claim.attempt, JobStatus.running)
    return job.id


def _status(rt, job_id: str) -> JobStatus:  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return repository.get_job_state(session, job_id).status
