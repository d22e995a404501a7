from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import Principal, scoped
from service.models import Dataset
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
