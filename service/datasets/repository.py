from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.auth import Principal, scoped
from service.models import Dataset


def get_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset | None:
    return session.scalar(scoped(select(Dataset), Dataset, principal).where(Dataset.id == dataset_id))


def get_dataset_by_id(session: Session, dataset_id: str) -> Dataset | None:
    """Unscoped, for the worker resolving dataset://ID of a job whose tenant was checked at submission."""
    return session.get(Dataset, dataset_id)


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def list_datasets(
    session: Session, principal: Principal, limit: int, after: tuple[datetime, str] | None
) -> list[Dataset]:
    stmt = scoped(select(Dataset), Dataset, principal)
    if after is not None:
        created, dataset_id = after
        newer_first = or_(Dataset.created_at < created, and_(Dataset.created_at == created, Dataset.id < dataset_id))
        stmt = stmt.where(newer_first)
    return list(session.scalars(stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)))
