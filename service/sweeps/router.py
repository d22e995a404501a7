"""/v1/sweeps: a grid of arms over one base spec, each arm an ordinary job (issue 13). Thin: service.sweeps.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from service.deps import BufferDep, PrincipalDep, SessionDep, StateDep
from service.errors import NotFound, problem_responses
from service.idempotency import service as idempotency
from service.sweeps import service
from service.sweeps.schemas import SweepIn, SweepOut, SweepPage, SweepReport

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


class PlotNotFound(NotFound):
    code, title = "plot_not_found", "Plot not found"


@router.post(
    "",
    status_code=201,
    response_model=SweepOut,
    responses=problem_responses(409, 413, 422),
    summary="Submit a sweep",
    description="Plans the arms (every grid combination, or `n_arms` drawn at random with `seed`), validates each "
    "arm's spec (a bad path or value is a 422 naming the path and the arm) and submits every arm as an ordinary job: "
    "the same URI policy, scheduler and tenant limit (arms beyond the limit are held, then dispatched as others "
    "finish). With `control: true` the base spec with `method.kd_sources: none` also runs, as the control of every "
    "arm. At most `max_sweep_arms` arms (64 by default), the control included. `Idempotency-Key` works as for jobs: "
    "a replay answers the same sweep and never creates its arms twice.",
)
def create_sweep(
    request: SweepIn,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    buffer: BufferDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    if idempotency_key is None:
        return service.sweep_view(session, service.create_sweep(session, principal, request, state.settings, buffer))
    key_hash = idempotency.request_hash({"sweep": request.model_dump(mode="json")})  # never a job's body hash
    retention_h = state.settings.idempotency_retention_h
    replay = idempotency.reserve(session, principal.tenant_id, idempotency_key, key_hash, retention_h)
    if replay is not None:  # the sweep as it is now
        sweep = service.load_sweep(session, principal, replay.body["id"])
        current = service.sweep_view(session, sweep).model_dump(mode="json")
        return JSONResponse(current, status_code=replay.status, headers={"Idempotent-Replayed": "true"})
    sweep = service.create_sweep(session, principal, request, state.settings, buffer)
    body = service.sweep_view(session, sweep).model_dump(mode="json")
    idempotency.complete(session, principal.tenant_id, idempotency_key, 201, body)
    return JSONResponse(body, status_code=201)


@router.get("", response_model=SweepPage, responses=problem_responses(422), summary="List sweeps, newest first")
def list_sweeps(
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="A next_cursor from the previous page.")] = None,
) -> SweepPage:
    items, cursor = service.list_sweeps(session, principal, state.storage, limit, after)
    return SweepPage(items=items, next_cursor=cursor)


@router.get(
    "/{sweep_id}",
    response_model=SweepOut,
    responses=problem_responses(404),
    summary="A sweep: its arms, their status and selection metric, the best arm and its lift over the control",
    description="Once every arm is final the sweep chooses its best arm (arms that failed are left out) and, with "
    "a control, computes the best arm's lift over it with 95% paired-bootstrap intervals; the outcome is stored.",
)
def get_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> SweepOut:
    return service.finalised_view(session, state.storage, service.load_sweep(session, principal, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepOut,
    responses=problem_responses(404),
    summary="Cancel every arm that has not finished",
)
def cancel_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> SweepOut:
    return service.finalised_view(session, state.storage, service.cancel_sweep(session, principal, sweep_id))


@router.get(
    "/{sweep_id}/report",
    response_model=SweepReport,
    responses=problem_responses(404),
    summary="The sweep report: one row per arm (JSON and Markdown) and the routes of its plots",
)
def sweep_report(sweep_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> SweepReport:
    view = service.finalised_view(session, state.storage, service.load_sweep(session, principal, sweep_id))
    return service.sweep_report(session, view)


@router.get(
    "/{sweep_id}/report/plots/{plot}",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, **problem_responses(404)},
    summary="A plot of the sweep report: selection.svg (the metric per arm) or loss.svg (the loss curves overlaid)",
)
def sweep_plot(sweep_id: str, plot: str, session: SessionDep, principal: PrincipalDep) -> Response:
    view = service.sweep_view(session, service.load_sweep(session, principal, sweep_id))
    svg = service.report_plot(session, view, plot)
    if svg is None:
        raise PlotNotFound(f"no plot {plot!r}; the plots are {', '.join(service.PLOTS)}")
    headers = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    return Response(svg, media_type="image/svg+xml", headers=headers)
