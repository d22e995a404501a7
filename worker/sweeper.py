"""The sweeper: a loop in every worker process that heals what a crash can leave behind.

    expired leases     the worker died: re-queue the job (its next attempt resumes from the last complete
                       checkpoint), or cancel/fail it (cancelling, or out of attempts)
    lost wake-ups      a queued job unclaimed for unsent_after_s whose message the broker no longer holds (the API
                       crashed between its commit and its send, or Redis lost its queue): send it again, once
    held jobs          a tenant under its active-job limit again: dispatch its most urgent held jobs
    comparisons        a job still comparing next to its final control arm (the arm that ended last could not
                       conclude it): conclude it (service.jobs.control)
    expired keys       hourly, Idempotency-Key rows older than their retention are deleted
Every worker sweeps; the row-level conditions make concurrent sweeps safe (one of them re-sends a lost wake-up), and
a duplicate wake-up is harmless.

After a sweep fails (the database is away), leases are not judged again until one lease after the database is
back: every supervisor renews its lease through an outage as soon as it can, so a lease that ran out during the
outage means nothing about its worker, and an outage must never spend an attempt by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from service.db import session_scope
from service.dispatch import Wakeup
from service.idempotency.service import prune_expired
from service.jobs import control, repository
from service.lifecycle import JobStatus
from service.models import utcnow
from worker.runtime import Runtime, get_runtime
from worker.supervisor import send_wakeups

log = logging.getLogger(__name__)
# A broker that cannot be inspected may still hold the message: re-send blindly only this rarely.
BLIND_RESEND_AFTER_S = 300.0
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    unsent: int
    released: int
    concluded: int = 0


def sweep_once(rt: Runtime, *, judge_leases: bool = True) -> SweepResult:
    requeued = requeue_expired(rt) if judge_leases else 0
    unsent, released = resend_lost(rt), release_held(rt)
    return SweepResult(requeued, unsent, released, control.settle_stranded(rt.sessions, rt.storage))


def requeue_expired(rt: Runtime) -> int:
    with session_scope(rt.sessions) as session:
        expired = repository.find_expired_leases(session)
    wakeups = []
    for lease in expired:
        with session_scope(rt.sessions) as session:
            status = repository.requeue_expired(session, lease.job_id, lease.attempt)
            wakeup = repository.get_wakeup(session, lease.job_id) if status is JobStatus.queued else None
        if wakeup is not None:
            wakeups.append(wakeup)
    send_wakeups(rt, wakeups)
    return len(wakeups)


def resend_lost(rt: Runtime) -> int:
    """Re-send the wake-ups of unclaimed queued jobs that the broker no longer holds; returns how many."""
    with session_scope(rt.sessions) as session:
        unclaimed = repository.find_unsent_queued(session, rt.worker.unsent_after_s)
    if not unclaimed:
        return 0
    try:
        lost = _lost(rt, unclaimed)
    except Exception:  # the broker is away (a Redis outage): the next sweep asks again; the rest of the sweep goes on
        log.warning("could not read the broker to find lost wake-ups; the next sweep retries", exc_info=True)
        return 0
    # after the broker was read: a job a worker took meanwhile is no longer queued, and claim_resend skips it
    with session_scope(rt.sessions) as session:
        resend = [job for job in lost if repository.claim_resend(session, job)]
    send_wakeups(rt, resend)
    return len(resend)


def _lost(rt: Runtime, unclaimed: list[repository.QueuedJob]) -> list[repository.QueuedJob]:
    by_id = {job.job_id: job for job in unclaimed}
    missing = rt.dispatcher.missing([Wakeup(job.job_id, job.queue, job.priority) for job in unclaimed])
    if missing is None:
        cutoff = utcnow() - timedelta(seconds=BLIND_RESEND_AFTER_S)
        return [job for job in unclaimed if job.dispatched_at is not None and job.dispatched_at < cutoff]
    return [by_id[wakeup.job_id] for wakeup in missing]


def release_held(rt: Runtime) -> int:
    with session_scope(rt.sessions) as session:
        released = repository.dispatchable_held_jobs(session, rt.settings.max_active_jobs_per_tenant)
        repository.mark_dispatched(session, [job.job_id for job in released])
    send_wakeups(rt, released)
    return len(released)


class Sweeper:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self.last_prune: float | None = None
        self.in_outage = False  # the last sweep failed
        self.back_at: float | None = None  # when a sweep last succeeded after failures

    def _loop(self) -> None:
        while not self.stopped.wait(self.rt.worker.sweep_interval_s):
            result = self.sweep(time.monotonic())
            if result is not None and (result.requeued or result.unsent or result.released or result.concluded):
                log.info("sweeper: %s", result)

    def sweep(self, now: float) -> SweepResult | None:
        """One sweep; None when it failed (the database may be briefly away: the next sweep tries again)."""
        try:
            result = sweep_once(self.rt, judge_leases=self.may_judge_leases(now))
            self.prune_if_due()
        except Exception:
            log.exception("sweep failed")
            self.in_outage = True
            return None
        if self.in_outage:
            self.in_outage, self.back_at = False, now
        return result

    def may_judge_leases(self, now: float) -> bool:
        """Not during an outage, nor within one lease after it: the supervisors are renewing theirs."""
        if self.in_outage:
            return False
        return self.back_at is None or now - self.back_at >= self.rt.settings.lease_s

    def prune_if_due(self) -> int:
        """Delete expired Idempotency-Key rows at the first sweep, then at most once per PRUNE_EVERY_S."""
        now = time.monotonic()
        if self.last_prune is not None and now - self.last_prune < PRUNE_EVERY_S:
            return 0
        self.last_prune = now  # set first: a failing prune is retried in an hour, not on every sweep
        pruned = prune_expired(self.rt.sessions, self.rt.settings.idempotency_retention_h)
        if pruned:
            log.info("pruned %d Idempotency-Key rows older than %d h", pruned, self.rt.settings.idempotency_retention_h)
        return pruned


_sweeper: Sweeper | None = None


def start_sweeper() -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper(get_runtime())
        _sweeper.thread.start()


def stop_sweeper() -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()
