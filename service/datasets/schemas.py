from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.schemas import CursorPage

DatasetFormat = Literal["jsonl", "parquet"]
# training: records for a job's mixture; evaluation: items of an evaluation suite. Each is validated as what it is.
DatasetKind = Literal["training", "evaluation"]


class DatasetProblem(BaseModel):
    origin: str = Field(description="Where: 'file:line' for JSONL, 'file:row N' for Parquet.")
    message: str


class DatasetOut(BaseModel):
    id: str
    name: str
    format: DatasetFormat
    kind: DatasetKind
    status: Literal["ready", "invalid"] = Field(description="invalid: some records have problems.")
    sha256: str
    size_bytes: int
    record_count: int = Field(description="Valid records.")
    problems: list[DatasetProblem]
    uri: str = Field(description="Name it in a job's mixture as this URI.")
    created_at: datetime


class DatasetPage(CursorPage):
    items: list[DatasetOut]
