"""Every query on sweeps and on the jobs that are their arms. API reads go through `scoped()`. None of these commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.auth import Principal, scoped
from service.models import Job, Metric, Sweep
from service.pagination import Page, newest_first, page_of


def add_sweep(session: Session, sweep: Sweep) -> Sweep:
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, principal: Principal, sweep_id: str) -> Sweep | None:
    return session.scalar(scoped(select(Sweep), Sweep, principal).where(Sweep.id == sweep_id))


def get_sweep_of_job(session: Session, job_id: str) -> Sweep | None:
    """For the worker, which acts for no tenant: the sweep the job is an arm of."""
    return session.scalar(select(Sweep).join(Job, Job.sweep_id == Sweep.id).where(Job.id == job_id))


def list_sweeps(session: Session, principal: Principal, limit: int, after: str | None) -> Page[Sweep]:
    stmt = scoped(select(Sweep), Sweep, principal)
    return page_of(session.scalars(newest_first(stmt, Sweep, limit, after)).all(), limit)


def list_arms(session: Session, sweep_id: str) -> list[Job]:
    """The sweep's jobs, without their reports (deferred) and in no particular order."""
    return list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))


def arm_reports(session: Session, sweep_id: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """{job id: report} of those of `job_ids` in the sweep that have a report."""
    if not job_ids:
        return {}
    stmt = select(Job.id, Job.report).where(Job.sweep_id == sweep_id, Job.id.in_(job_ids), Job.report.is_not(None))
    return {job_id: report for job_id, report in session.execute(stmt) if report is not None}


def loss_curves(session: Session, job_ids: list[str], name: str = "loss") -> dict[str, list[tuple[int, float]]]:
    stmt = select(Metric.job_id, Metric.step, Metric.value).where(Metric.job_id.in_(job_ids), Metric.name == name)
    curves: dict[str, list[tuple[int, float]]] = {job_id: [] for job_id in job_ids}
    for job_id, step, value in session.execute(stmt.order_by(Metric.job_id, Metric.step)):
        curves[job_id].append((step, value))
    return curves


def request_cancel(session: Session, sweep_id: str, now: datetime) -> None:
    stmt = update(Sweep).where(Sweep.id == sweep_id, Sweep.cancel_requested_at.is_(None))
    session.execute(stmt.values(cancel_requested_at=now).execution_options(synchronize_session=False))


def store_result(
    session: Session, sweep_id: str, status: str, best_job_id: str | None, result: dict[str, Any], now: datetime
) -> bool:
    """Record the outcome once: False when another process finished the sweep first."""
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.finished_at.is_(None))
        .values(status=status, best_job_id=best_job_id, result=result, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1
