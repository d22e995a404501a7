"""The worker's lease and fencing helpers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from service.db import session_scope
from service.jobs import repository as jobs
from service.keys.repository import get_or_create_tenant
from service.lifecycle import FINAL_STATUSES, JobStatus, can_transition
from service.models import Job, JobEvent, Metric, Tenant, new_id, utcnow

SPEC = {
    "name": "j",
    "student": "s3://m/s",
    "teacher": "s3://m/t",
    "mixture": [{"name": "a", "uri": "s3://d/a", "distill": True}],
}


both = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


def add_job(session, tenant_name="lease", dispatched=True, **fields) -> str:
    tenant = get_or_create_tenant(session, tenant_name)
    job = Job(
        tenant_id=tenant.id,
        name="j",
        spec=SPEC,
        queue=fields.pop("queue", "lease-q"),
        max_attempts=3,
        dispatched_at=utcnow() if dispatched else None,
        **fields,
    )
    session.add(job)
    session.flush()
    return job.id


def test_lifecycle_table():
    assert can_transition(JobStatus.queued, JobStatus.validating)
    assert can_transition(JobStatus.running, JobStatus.cancelling)
    assert can_transition(JobStatus.failed, JobStatus.queued) and can_transition(JobStatus.cancelled, JobStatus.queued)
    assert not can_transition(JobStatus.succeeded, JobStatus.queued)
    assert not can_transition(JobStatus.queued, JobStatus.running)
    assert all(not can_transition(s, JobStatus.validating) for s in FINAL_STATUSES)


def test_ids_sort_by_creation_time():
    ids = [new_id("job") for _ in range(3)]
    assert ids[0][:14] <= ids[1][:14] <= ids[2][:14] and len(ids[0]) == 30


@both
def test_claim_is_fenced_and_stale_attempts_change_nothing(sessions):
    with session_scope(sessions) as session:
        job_id = add_job(session)
        assert jobs.claim_job(session, add_job(session, dispatched=False), "w", 60) is None  # held: not claimable
        claim = jobs.claim_job(session, job_id, "w1", 60)
        assert claim is not None and claim.attempt == 1 and claim.spec.name == "j"
        assert jobs.claim_job(session, job_id, "w2", 60) is None
        assert jobs.renew_lease(session, job_id, 1, "w1", 60)
        assert not jobs.renew_lease(session, job_id, 1, "w2", 60)
        assert jobs.transition(session, job_id, 1, JobStatus.running)
        assert not jobs.transition(session, job_id, 1, JobStatus.validating)  # not an allowed move
        assert not jobs.transition(session, job_id, 0, JobStatus.evaluating)  # stale attempt
        assert jobs.record_metrics(session, job_id, 1, [(1, "loss", 2.0), (2, "loss", 1.5)]) == 2
        assert jobs.record_metrics(session, job_id, 0, [(1, "loss", 99.0)]) == 0
        assert jobs.get_job_state(session, job_id) == jobs.JobState(JobStatus.running, 1, False)
        with pytest.raises(ValueError):
            jobs.transition(session, job_id, 1, JobStatus.failed, lease_owner="x")


@both
def test_expired_lease_is_requeued_and_resumes_from_the_last_checkpoint(sessions):
    with session_scope(sessions) as session:
        job_id = add_job(session)
        claim = jobs.claim_job(session, job_id, "w1", 60)
        jobs.transition(session, job_id, claim.attempt, JobStatus.running)
        jobs.record_metrics(session, job_id, 1, [(s, "loss", 1.0) for s in range(1, 21)])
        jobs.record_checkpoint(
            session, job_id, 1, step=10, storage_prefix="c/10", manifest={"a": "0" * 64}, size_bytes=1
        )
        later = utcnow() + timedelta(seconds=120)
        expired = jobs.find_expired_leases(session, now=later)
        assert [e.job_id for e in expired if e.job_id == job_id] == [job_id]
        assert jobs.requeue_expired(session, job_id, 1, now=later) is JobStatus.queued
        assert jobs.requeue_expired(session, job_id, 1, now=later) is None  # already healed
        job = session.get(Job, job_id)
        session.refresh(job)
        assert job.status is JobStatus.queued and job.resume_checkpoint_step == 10 and job.lease_owner is None
        # the next attempt re-writes the steps after its checkpoint; the old attempt can no longer write
        second = jobs.claim_job(session, job_id, "w2", 60)
        assert second.attempt == 2 and second.resume_checkpoint_step == 10
        assert jobs.record_metrics(session, job_id, 2, [(11, "loss", 0.5)]) == 1
        assert jobs.record_metrics(session, job_id, 1, [(12, "loss", 9.0)]) == 0
        values = dict(session.execute(select(Metric.step, Metric.value).where(Metric.job_id == job_id)).all())
        assert values[11] == 0.5 and values[12] == 1.0
        assert not jobs.renew_lease(session, job_id, 1, "w1", 60)


@both
def test_out_of_attempts_fails_and_cancelling_becomes_cancelled(sessions):
    later = utcnow() + timedelta(seconds=120)
    with session_scope(sessions) as session:
        tired = add_job(session, attempt=2)
        jobs.claim_job(session, tired, "w", 60)
        assert jobs.requeue_expired(session, tired, 3, now=later) is JobStatus.failed
        assert session.scalar(select(Job.failure_reason).where(Job.id == tired)).value == "infrastructure"
        stopping = add_job(session)
        jobs.claim_job(session, stopping, "w", 60)
        jobs.request_cancel(session, stopping)
        assert jobs.requeue_expired(session, stopping, 1, now=later) is JobStatus.cancelled


@both
def test_sweeper_finds_queued_jobs_whose_wakeup_may_be_lost(sessions):
    with session_scope(sessions) as session:
        job_id = add_job(session)
        assert job_id not in [q.job_id for q in jobs.find_unsent_queued(session, older_than_s=30)]
        later = utcnow() + timedelta(seconds=60)
        assert job_id in [q.job_id for q in jobs.find_unsent_queued(session, older_than_s=30, now=later)]
        jobs.mark_dispatched(session, [job_id], now=later)
        assert job_id not in [q.job_id for q in jobs.find_unsent_queued(session, older_than_s=30, now=later)]


@both
def test_events_are_logged_for_every_transition(sessions):
    with session_scope(sessions) as session:
        job_id = add_job(session)
        claim = jobs.claim_job(session, job_id, "w", 60)
        jobs.transition(session, job_id, claim.attempt, JobStatus.running)
        jobs.transition(
            session,
            job_id,
            claim.attempt,
            JobStatus.failed,
            failure_reason="out_of_memory",
            failure_message="CUDA OOM at step 3",
        )
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        assert [e.data["status"] for e in events] == ["validating", "running", "failed"]
        assert events[-1].data["failure_reason"] == "out_of_memory"


def test_sixteen_concurrent_claims_one_winner(live_sessions):
    """Real transactions on Postgres, one thread per claimer."""
    with session_scope(live_sessions) as session:
        job_id = add_job(session, tenant_name=f"race-{new_id('t')}", queue="race")
    barrier = threading.Barrier(16)
    results: list[object] = []

    def claim(i: int) -> None:
        barrier.wait()
        with session_scope(live_sessions) as session:
            results.append(jobs.claim_job(session, job_id, f"worker-{i}", 60))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 16 and len(winners) == 1 and winners[0].attempt == 1
    with session_scope(live_sessions) as session:
        tenant_id = session.get(Job, job_id).tenant_id
        session.execute(delete(Tenant).where(Tenant.id == tenant_id))


@both
def test_a_failed_attempt_is_requeued_until_out_of_attempts(sessions):
    with session_scope(sessions) as session:
        job_id = add_job(session)
        for attempt in (1, 2):
            claim = jobs.claim_job(session, job_id, "w", 60)
            assert claim.attempt == attempt
            assert jobs.requeue_failed_attempt(session, job_id, attempt, "node lost") is JobStatus.queued
            assert jobs.get_wakeup(session, job_id) == jobs.QueuedJob(job_id, "lease-q", 5)
        jobs.claim_job(session, job_id, "w", 60)
        assert jobs.requeue_failed_attempt(session, job_id, 2, "stale") is None  # fenced out
        assert jobs.requeue_failed_attempt(session, job_id, 3, "node lost") is JobStatus.failed
        assert jobs.get_wakeup(session, job_id) is None
        job = session.get(Job, job_id)
        session.refresh(job)
        assert job.failure_message == "node lost (gave up after 3 attempts)" and job.finished_at is not None
        types = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)).all()
        assert types.count("attempt_failed") == 3
