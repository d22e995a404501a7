"""The sweep documents: what POST /v1/sweeps takes and what GET /v1/sweeps/{id} answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lingudistill.spec import JobSpec
from service.jobs.schemas import Progress
from service.lifecycle import FailureReason, JobStatus
from service.schemas import CursorPage

MAX_GRID_PATHS = 16
MAX_GRID_VALUES = 64
DottedPath = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]
GridValue = Annotated[str, Field(max_length=200)] | bool | int | float
SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridSampling(Strict):
    type: Literal["grid"] = "grid"


class RandomSampling(Strict):
    type: Literal["random"]
    n_arms: int = Field(ge=1, le=1024, description="Arms drawn from the grid, without repeats (at most its size).")
    seed: int = Field(0, ge=0, lt=2**31, description="The same seed and grid draw the same arms.")


Sampling = Annotated[GridSampling | RandomSampling, Field(discriminator="type")]


class Selection(Strict):
    metric: DottedPath = Field(
        "language.mean_recovery",
        description="A dotted path into each arm's report: `language.mean_recovery`, `vision.drop`, or a suite's "
        "row by name, e.g. `language.<suite>.recovery`.",
    )
    mode: Literal["max", "min"] = Field("max", description="The best arm has the largest (max) or smallest value.")


class SweepIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] | None = Field(
        None, description="Defaults to the base spec's name."
    )
    base: JobSpec = Field(description="The spec every arm starts from.")
    grid: dict[DottedPath, Annotated[list[GridValue], Field(min_length=1, max_length=MAX_GRID_VALUES)]] = Field(
        min_length=1,
        max_length=MAX_GRID_PATHS,
        description="Overrides by dotted path, e.g. {'method.kd_weight': [0.5, 1, 2], 'method.kv_sharing': "
        "['prompt', 'off']}. Each arm sets one value of every path.",
    )
    sampling: Sampling = Field(default_factory=GridSampling, description="Every combination, or n_arms at random.")
    control: bool = Field(
        False,
        description="Also run the base spec with method.kd_sources: none, the control of every arm; the best arm's "
        "lift over it is reported. Only when every grid path is under `method.`.",
    )
    select: Selection = Field(default_factory=Selection, description="How the best arm is chosen.")

    @field_validator("grid")
    @classmethod
    def _distinct_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Two equal values would plan two arms with one label: the same job twice."""
        for path, values in grid.items():
            seen = [json.dumps(value) for value in values]
            repeated = sorted({text for text in seen if seen.count(text) > 1})
            if repeated:
                raise ValueError(f"{path} repeats {', '.join(repeated)}")
        return grid


class ArmOut(BaseModel):
    job_id: str
    label: str = Field(description="'method.kd_weight=0.5,method.temperature=2', or 'control'.")
    overrides: dict[str, Any]
    is_control: bool
    status: JobStatus
    metric: float | None = Field(None, description="The selection metric in the arm's report (None until then).")
    progress: Progress
    failure_reason: FailureReason | None = None


class Interval(BaseModel):
    name: str
    kind: str = Field(description="language, vision or mean_recovery.")
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    note: str | None = None


class Lift(BaseModel):
    control_job_id: str
    confidence: float | None = None
    mean_recovery: Interval | None = None
    suites: list[Interval] = Field(default_factory=list)
    error: str | None = Field(None, description="Why no lift could be computed (the control arm failed, ...).")


class Gate(BaseModel):
    name: str
    threshold: float | None = None
    value: float | None = None
    passed: bool
    note: str | None = None


class SweepLinks(BaseModel):
    self: str
    report: str
    cancel: str


class SweepOut(BaseModel):
    id: str
    name: str
    status: SweepStatus = Field(
        description="running until every arm is final; then succeeded (a best arm was "
        "chosen), failed (no arm succeeded) or cancelled."
    )
    tenant_id: str
    base: JobSpec
    grid: dict[str, list[Any]]
    sampling: GridSampling | RandomSampling
    select: Selection
    control: bool
    arms: list[ArmOut]
    best_job_id: str | None = None
    best_arm: str | None = Field(None, description="The best arm's label.")
    lift: Lift | None = Field(
        None, description="The best arm over the control arm, with 95% paired-bootstrap intervals (service.comparison)."
    )
    gates: list[Gate] | None = Field(None, description="The best arm's gates, min_lift counted with the lift.")
    passed: bool | None = Field(None, description="Whether the best arm passed every gate.")
    cancel_requested_at: datetime | None = None
    created_at: datetime
    finished_at: datetime | None = None
    links: SweepLinks


class SweepPage(CursorPage):
    items: list[SweepOut]


class SweepReport(BaseModel):
    sweep_id: str
    metric: str
    mode: Literal["max", "min"]
    columns: list[str]
    rows: list[dict[str, Any]]
    markdown: str
    plots: list[str] = Field(description="This API's routes of the SVG plots.")
