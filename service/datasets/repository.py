from __future__ import annotations

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from service.auth import Principal, scoped
from service.lifecycle import FINAL_STATUSES
from service.models import Dataset, Job
from service.pagination import Page, newest_first, page_of


def get_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset | None:
    return session.scalar(scoped(select(Dataset), Dataset, principal).where(Dataset.id == dataset_id))


def get_dataset_by_id(session: Session, dataset_id: str) -> Dataset | None:
    """Unscoped, for the worker resolving dataset://ID of a job whose tenant was checked at submission."""
    return session.get(Dataset, dataset_id)


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def list_datasets(session: Session, principal: Principal, limit: int, after: str | None) -> Page[Dataset]:
    stmt = scoped(select(Dataset), Dataset, principal)
    return page_of(session.scalars(newest_first(stmt, Dataset, limit, after)).all(), limit)


def delete_dataset(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()


def unfinished_jobs_naming(session: Session, tenant_id: str, dataset_id: str, limit: int = 5) -> list[str]:
    """Ids of the tenant's jobs not yet final whose spec names dataset://`dataset_id` (ids have a fixed length,
    so one id never contains another)."""
    names_it = cast(Job.spec, String).contains(f"dataset://{dataset_id}", autoescape=True)
    stmt = select(Job.id).where(Job.tenant_id == tenant_id, Job.status.not_in(FINAL_STATUSES), names_it)
    return list(session.scalars(stmt.order_by(Job.id).limit(limit)))


def get_dataset_locked(session: Session, principal: Principal, dataset_id: str, *, exclusive: bool) -> Dataset | None:
    """The dataset with its row locked until the transaction ends (Postgres; SQLite serialises writers anyway): a
    submission naming it takes a shared lock and a deletion an exclusive one, so a job is never committed naming a
    dataset deleted meanwhile, and a deletion never misses a job committed meanwhile."""
    stmt = scoped(select(Dataset), Dataset, principal).where(Dataset.id == dataset_id)
    return session.scalar(stmt.with_for_update(read=not exclusive))
