"""Sweep use cases: plan the arms of a grid, submit each as an ordinary job, and once every arm is final choose the
best one and measure its lift over the control arm. No commits here: the request's session commits.

Each arm goes through jobs.service.create_job, so it meets the same URI policy, scheduler and tenant limit as any
job: arms beyond the tenant's active-job limit are held and dispatched as earlier ones finish (never refused), and a
sweep is bounded by `max_sweep_arms`. The outcome is computed once, when the last arm ends (the worker's hook) or on
the first read after that, and stored; a second finaliser changes nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from lingudistill.evaluation.compare import CompareError
from lingudistill.evaluation.lift import ItemMismatch
from lingudistill.evaluation.plots import bar_chart, line_chart
from lingudistill.spec import JobSpec
from service.auth import Principal
from service.comparison import RunFilesMissing, compare_jobs
from service.db import session_scope
from service.dispatch import DispatchBuffer
from service.errors import InvalidSweep, InvalidTransition, SweepNotFound, SweepTooLarge
from service.jobs import service as jobs
from service.lifecycle import JobStatus
from service.models import Job, Sweep, utcnow
from service.redact import redact_paths
from service.schemas import FieldError
from service.settings import Settings
from service.storage import Storage
from service.sweeps import repository
from service.sweeps.schemas import (
    ArmOut,
    Gate,
    Interval,
    Lift,
    RandomSampling,
    Selection,
    SweepIn,
    SweepLinks,
    SweepOut,
    SweepReport,
)

log = logging.getLogger(__name__)
CONTROL = "control"
CONTROL_OVERRIDES = {"method.kd_sources": "none"}
REPORT_SECTIONS = ("language", "vision", "training")  # where a selection metric may point
PLOTS = ("selection.svg", "loss.svg")
MAX_LABEL = 1000  # jobs.sweep_arm

# --- planning: pure functions of the request ------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedArm:
    label: str
    overrides: dict[str, Any]
    control: bool = False


def grid_size(grid: dict[str, Sequence[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def combination(grid: dict[str, Sequence[Any]], index: int) -> dict[str, Any]:
    """The `index`-th combination of the grid in itertools.product order (the last path varies fastest)."""
    chosen: dict[str, Any] = {}
    for path in reversed(list(grid)):
        index, position = divmod(index, len(grid[path]))
        chosen[path] = grid[path][position]
    return {path: chosen[path] for path in grid}


def sampled_overrides(grid: dict[str, Sequence[Any]], sampling: Any) -> list[dict[str, Any]]:
    """Every combination (grid), or `n_arms` distinct ones drawn with `seed` (random): the same request always
    plans the same arms. Random sampling draws indices, so a grid too large to enumerate is never enumerated."""
    size = grid_size(grid)
    if not isinstance(sampling, RandomSampling):
        return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if sampling.n_arms > size:
        error = FieldError(loc=["body", "sampling", "n_arms"], msg=f"the grid has only {size} combination(s)")
        raise InvalidSweep(f"n_arms {sampling.n_arms} is more than the grid's {size} combinations", errors=[error])
    return [combination(grid, i) for i in distinct_indices(size, sampling.n_arms, sampling.seed)]


def distinct_indices(size: int, count: int, seed: int) -> list[int]:
    """`count` distinct draws from range(size); random.sample cannot take a range past 2^63."""
    rng = random.Random(seed)
    if size < 2**62:
        return rng.sample(range(size), count)
    drawn: dict[int, None] = {}  # count is small and size vast: a repeat is rare
    while len(drawn) < count:
        drawn[rng.randrange(size)] = None
    return list(drawn)


def arm_label(overrides: dict[str, Any]) -> str:
    return ",".join(f"{path}={_plain(value)}" for path, value in overrides.items())


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def plan_arms(request: SweepIn, max_arms: int) -> list[PlannedArm]:
    """The arms in order (the control last), refusing a control of a grid that changes more than the method and a
    sweep over `max_arms`."""
    outside = [path for path in request.grid if not path.startswith("method.")]
    if request.control and outside:
        errors = [FieldError(loc=["body", "grid", path], msg="not under method.") for path in outside]
        raise InvalidSweep(
            f"control: true needs every grid path under method.; {outside[0]} changes the data, training or "
            "evaluation, so one control run would not be the control of every arm",
            errors=errors,
        )
    count = grid_size(request.grid) if not isinstance(request.sampling, RandomSampling) else request.sampling.n_arms
    if count + request.control > max_arms:
        raise SweepTooLarge(f"{count + request.control} arms; a sweep may have at most {max_arms}")
    arms = [PlannedArm(arm_label(o), o) for o in sampled_overrides(request.grid, request.sampling)]
    too_long = next((arm.label for arm in arms if len(arm.label) > MAX_LABEL), None)
    if too_long is not None:
        raise InvalidSweep(f"arm {too_long[:80]}...: its label (the overrides) is over {MAX_LABEL} characters")
    if request.control:
        arms.append(PlannedArm(CONTROL, dict(CONTROL_OVERRIDES), control=True))
    return arms


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any], arm: str) -> dict[str, Any]:
    """A copy of `base` (a spec as JSON, every default written out) with each dotted path set; InvalidSweep names
    the path and the arm when a path leads nowhere."""
    spec = json.loads(json.dumps(base))
    for path, value in overrides.items():
        node: Any = spec
        parts = path.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, dict) and part in node:
                key: Any = part
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                key = int(part)
            else:
                where = ".".join(parts[:depth]) or "the spec"
                raise InvalidSweep(
                    f"arm {arm}: {path} is not a field of the spec ({where} has no {part!r})",
                    errors=[FieldError(loc=["body", "grid", path], msg=f"arm {arm}: no field {part!r} in {where}")],
                )
            if last:
                node[key] = value
            else:
                node = node[key]
    return spec


def arm_spec(base: dict[str, Any], arm: PlannedArm, name: str) -> JobSpec:
    """The arm's JobSpec, validated; InvalidSweep names the arm and each field the spec refuses."""
    spec = apply_overrides(base, arm.overrides, arm.label)
    spec["name"] = name
    try:
        validated = JobSpec.model_validate(spec)
    except ValidationError as exc:
        errors = [
            FieldError(
                loc=["body", "grid", ".".join(str(p) for p in e["loc"]) or "base"], msg=f"arm {arm.label}: {e['msg']}"
            )
            for e in exc.errors()
        ]
        raise InvalidSweep(f"arm {arm.label}: the spec is invalid: {errors[0].msg}", errors=errors) from None
    if validated.evaluation.control:  # the sweep's own control arm serves every arm
        error = FieldError(loc=["body", "base", "evaluation", "control"], msg="use the sweep's control: true")
        raise InvalidSweep(
            "a sweep's arms run without evaluation.control; set the sweep's control instead", errors=[error]
        )
    return validated


def arm_name(sweep_name: str, index: int, arm: PlannedArm) -> str:
    suffix = f"-{CONTROL}" if arm.control else f"-arm{index + 1}"
    return sweep_name[: 100 - len(suffix)] + suffix


def check_metric(select: Selection) -> None:
    section = select.metric.split(".", 1)[0]
    if section not in REPORT_SECTIONS:
        error = FieldError(loc=["body", "select", "metric"], msg=f"must start with one of {', '.join(REPORT_SECTIONS)}")
        raise InvalidSweep(f"the selection metric {select.metric} is not in a job report", errors=[error])


# --- selection: pure functions of the reports -------------------------------------------------------------------


def metric_value(report: dict[str, Any] | None, path: str) -> float | None:
    """The number at `path` in a report; a part that is not a key picks a row of a `suites` list by name, so
    `language.<suite>.recovery` reads that suite's recovery. None when absent or not a number."""
    node: Any = report
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and isinstance(node.get("suites"), list):
            node = next((row for row in node["suites"] if isinstance(row, dict) and row.get("name") == part), None)
        elif isinstance(node, list):
            node = next((row for row in node if isinstance(row, dict) and row.get("name") == part), None)
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None
    return float(node)


def choose_best(values: dict[str, float | None], mode: str) -> str | None:
    """The key of the largest (max) or smallest (min) value, None values left out; a tie goes to the first."""
    scored = [(key, value) for key, value in values.items() if value is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda item: item[1])[0]


# --- use cases ----------------------------------------------------------------------------------------------------


def create_sweep(
    session: Session, principal: Principal, request: SweepIn, settings: Settings, buffer: DispatchBuffer
) -> Sweep:
    check_metric(request.select)
    arms = plan_arms(request, settings.max_sweep_arms)
    base = request.base.resolved()  # one seed for every arm: the control shares each arm's data order
    base_json = base.model_dump(mode="json")
    name = request.name or base.name
    specs = [arm_spec(base_json, arm, arm_name(name, i, arm)) for i, arm in enumerate(arms)]  # all, before any job
    sweep = repository.add_sweep(
        session,
        Sweep(
            tenant_id=principal.tenant_id,
            name=name,
            base=base_json,
            grid=request.grid,
            sampling=request.sampling.model_dump(mode="json"),
            selection=request.select.model_dump(mode="json"),
            control=request.control,
            arms=[{"label": a.label, "overrides": a.overrides, "control": a.control} for a in arms],
            status="running",
            created_at=utcnow(),
        ),
    )
    for arm, spec in zip(arms, specs, strict=True):
        job = jobs.create_job(session, principal, spec, settings, buffer)
        job.sweep_id, job.sweep_arm = sweep.id, arm.label
    session.flush()
    return sweep


def load_sweep(session: Session, principal: Principal, sweep_id: str) -> Sweep:
    sweep = repository.get_sweep(session, principal, sweep_id)
    if sweep is None:
        raise SweepNotFound(f"no sweep {sweep_id}")
    return sweep


def cancel_sweep(session: Session, principal: Principal, sweep_id: str) -> Sweep:
    """Cancel every arm that has not finished; the sweep ends (cancelled) once they all have."""
    sweep = load_sweep(session, principal, sweep_id)
    repository.request_cancel(session, sweep.id, utcnow())
    for job in repository.list_arms(session, sweep.id):
        if not job.status.is_final:
            with contextlib.suppress(InvalidTransition):  # it finished meanwhile
                jobs.cancel_job(session, principal, job.id)
    session.refresh(sweep)
    return sweep


def ordered_arms(sweep: Sweep, jobs_of_sweep: list[Job]) -> list[tuple[dict[str, Any], Job]]:
    """(planned arm, its job) in the sweep's planned order."""
    by_label = {job.sweep_arm: job for job in jobs_of_sweep}
    return [(arm, by_label[arm["label"]]) for arm in sweep.arms if arm["label"] in by_label]


def finalise_if_done(session: Session, storage: Storage, sweep: Sweep) -> bool:
    """Once every arm is final: choose the best arm, compute its lift over the control, store it. True when this
    call stored the outcome; False when the sweep is still running or was already finished."""
    if sweep.finished_at is not None:
        return False
    arms = ordered_arms(sweep, repository.list_arms(session, sweep.id))
    if any(not job.status.is_final for _, job in arms):
        return False
    metric, mode = sweep.selection["metric"], sweep.selection["mode"]
    reports = repository.arm_reports(session, sweep.id, [j.id for _, j in arms if j.status is JobStatus.succeeded])
    values = {job.id: metric_value(reports.get(job.id), metric) for _, job in arms}
    best = choose_best({job.id: values[job.id] for arm, job in arms if not arm["control"]}, mode)
    control = next((job for arm, job in arms if arm["control"]), None)
    result: dict[str, Any] = {"metric": metric, "mode": mode, "values": values, "lift": None}
    if best is None:
        result["note"] = f"no arm succeeded with a {metric} in its report"
    else:
        result |= best_outcome(storage, reports[best], best, control)
    status = "cancelled" if sweep.cancel_requested_at else ("succeeded" if best else "failed")
    stored = repository.store_result(session, sweep.id, status, best, result, utcnow())
    session.refresh(sweep)
    return stored


def best_outcome(storage: Storage, report: dict[str, Any], best_id: str, control: Job | None) -> dict[str, Any]:
    """The best arm's gates and verdict; with a control that succeeded, computed on the combined report (so
    `min_lift` counts) with the lift of the best arm over it."""
    if control is None:
        return {"gates": report.get("gates", []), "passed": report.get("passed")}
    if control.status is not JobStatus.succeeded:
        lift = {"control_job_id": control.id, "error": f"the control arm {control.status.value}"}
        return {"gates": report.get("gates", []), "passed": report.get("passed"), "lift": lift}
    try:
        combined = compare_jobs(storage, best_id, control.id)
    except (CompareError, ItemMismatch, RunFilesMissing) as exc:
        lift = {"control_job_id": control.id, "error": redact_paths(str(exc))}  # it names temporary folders
        return {"gates": report.get("gates", []), "passed": report.get("passed"), "lift": lift}
    return {
        "gates": combined["gates"],
        "passed": combined["passed"],
        "lift": {"control_job_id": control.id, **combined["lift"]},
    }


def finalise_after_job(sessions: sessionmaker[Session], storage: Storage, job_id: str) -> bool:
    """The worker's hook when a job ends: finish the job's sweep if it was its last arm."""
    with session_scope(sessions) as session:
        sweep = repository.get_sweep_of_job(session, job_id)
        return sweep is not None and finalise_if_done(session, storage, sweep)


# --- views --------------------------------------------------------------------------------------------------------


def sweep_view(session: Session, sweep: Sweep) -> SweepOut:
    arms = ordered_arms(sweep, repository.list_arms(session, sweep.id))
    result = sweep.result or {}
    if "values" in result:
        values = result["values"]
    else:  # still running: the values of the arms that have finished so far
        done = [job.id for _, job in arms if job.status is JobStatus.succeeded]
        reports = repository.arm_reports(session, sweep.id, done)
        values = {job_id: metric_value(report, sweep.selection["metric"]) for job_id, report in reports.items()}
    labels = {job.id: arm["label"] for arm, job in arms}
    return SweepOut(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        tenant_id=sweep.tenant_id,
        base=JobSpec.model_validate(sweep.base),
        grid=sweep.grid,
        sampling=sweep.sampling,
        select=Selection.model_validate(sweep.selection),
        control=sweep.control,
        arms=[arm_view(arm, job, values.get(job.id)) for arm, job in arms],
        best_job_id=sweep.best_job_id,
        best_arm=labels.get(sweep.best_job_id or ""),
        lift=lift_view(result.get("lift")),
        gates=[Gate.model_validate(g) for g in result["gates"]] if "gates" in result else None,
        passed=result.get("passed"),
        cancel_requested_at=sweep.cancel_requested_at,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        links=SweepLinks(
            self=f"/v1/sweeps/{sweep.id}",
            report=f"/v1/sweeps/{sweep.id}/report",
            cancel=f"/v1/sweeps/{sweep.id}/cancel",
        ),
    )


def arm_view(arm: dict[str, Any], job: Job, value: float | None) -> ArmOut:
    return ArmOut(
        job_id=job.id,
        label=arm["label"],
        overrides=arm["overrides"],
        is_control=arm["control"],
        status=job.status,
        metric=value,
        progress=jobs.progress_of(job),
        failure_reason=job.failure_reason,
    )


def lift_view(lift: dict[str, Any] | None) -> Lift | None:
    if lift is None:
        return None
    mean = lift.get("mean_recovery")
    return Lift(
        control_job_id=lift["control_job_id"],
        confidence=lift.get("confidence"),
        mean_recovery=None if mean is None else Interval(name="mean_recovery", kind="mean_recovery", **_interval(mean)),
        suites=[
            Interval(name=row["name"], kind=row.get("kind", ""), **_interval(row)) for row in lift.get("suites", [])
        ],
        error=lift.get("error"),
    )


def _interval(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in ("estimate", "low", "high", "note")}


def finalised_view(session: Session, storage: Storage, sweep: Sweep) -> SweepOut:
    """The sweep as it is now, finishing it first if its last arm ended without the worker's hook (a queued arm
    cancelled through the API, a worker that died after the job's final write). A failure to finish it (storage
    unreachable, say) leaves it running for the next read or the worker's hook rather than failing the read."""
    try:
        with session.begin_nested():
            finalise_if_done(session, storage, sweep)
    except Exception:
        log.exception("sweep %s: finishing it on read", sweep.id)
    return sweep_view(session, sweep)


def list_sweeps(
    session: Session, principal: Principal, storage: Storage, limit: int, after: str | None
) -> tuple[list[SweepOut], str | None]:
    page = repository.list_sweeps(session, principal, limit, after)
    return [finalised_view(session, storage, sweep) for sweep in page.items], page.next_cursor


# --- the report ---------------------------------------------------------------------------------------------------

REPORT_COLUMNS = ["arm", "job_id", "status", "metric", "mean_recovery", "vision_drop", "loss_last", "best", "control"]


def sweep_report(session: Session, view: SweepOut) -> SweepReport:
    """The arms as a table (JSON rows and Markdown) with the selection metric, the recovery and the final loss."""
    reports = repository.arm_reports(session, view.id, [arm.job_id for arm in view.arms])
    rows = []
    for arm in view.arms:
        report = reports.get(arm.job_id)
        rows.append(
            {
                "arm": arm.label,
                "job_id": arm.job_id,
                "status": arm.status.value,
                "metric": arm.metric,
                "mean_recovery": metric_value(report, "language.mean_recovery"),
                "vision_drop": metric_value(report, "vision.drop"),
                "loss_last": metric_value(report, "training.loss_last"),
                "best": arm.job_id == view.best_job_id,
                "control": arm.is_control,
            }
        )
    return SweepReport(
        sweep_id=view.id,
        metric=view.select.metric,
        mode=view.select.mode,
        columns=REPORT_COLUMNS,
        rows=rows,
        markdown=report_markdown(view, rows),
        plots=[f"/v1/sweeps/{view.id}/report/plots/{name}" for name in PLOTS],
    )


def report_markdown(view: SweepOut, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Sweep {view.name}",
        "",
        f"Status: **{view.status}**. Best arm by {view.select.metric} ({view.select.mode}): "
        f"**{view.best_arm or 'none yet'}**.",
        "",
        "| arm | status | " + f"{view.select.metric} | mean recovery | vision drop | final loss |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        mark = " (best)" if row["best"] else (" (control)" if row["control"] else "")
        cells = [_fmt(row[k]) for k in ("metric", "mean_recovery", "vision_drop", "loss_last")]
        lines.append(f"| {row['arm']}{mark} | {row['status']} | " + " | ".join(cells) + " |")
    if view.lift is not None:
        lines += ["", f"## Lift of the best arm over the control ({view.lift.control_job_id})", ""]
        if view.lift.error:
            lines.append(f"No lift: {view.lift.error}")
        else:
            lines += ["| | lift | interval |", "|---|---:|---|"]
            intervals = ([view.lift.mean_recovery] if view.lift.mean_recovery else []) + view.lift.suites
            lines += [f"| {i.name} | {_fmt(i.estimate)} | [{_fmt(i.low)}, {_fmt(i.high)}] |" for i in intervals]
    if view.gates is not None:
        lines += ["", f"Gates of the best arm: {'passed' if view.passed else 'FAILED'}."]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def report_plot(session: Session, view: SweepOut, name: str) -> str | None:
    """An SVG: the selection metric per arm (selection.svg) or the arms' loss curves overlaid (loss.svg)."""
    labels = {arm.job_id: arm.label for arm in view.arms}
    if name == "selection.svg":
        report = sweep_report(session, view)
        values = [row["metric"] for row in report.rows]
        return bar_chart(
            [row["arm"] for row in report.rows],
            {view.select.metric: values},
            title=f"{view.select.metric} per arm",
            y_label=view.select.metric,
        )
    if name == "loss.svg":
        curves = repository.loss_curves(session, list(labels))
        series = {labels[job_id]: points for job_id, points in curves.items() if points}
        return line_chart(series, title="Training loss per arm", x_label="step", y_label="loss")
    return None
