"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from service.deps import AdminDep, AppState, StateDep
from service.errors import ServiceUnavailable, problem_responses
from service.jobs import repository as jobs_repository
from service.lifecycle import JobStatus
from service.ops.metrics import JOBS_BY_STATUS, REGISTRY

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up", responses=problem_responses(public=True))
async def healthz() -> dict[str, str]:
    # async: a liveness probe answers from the event loop even while every thread-pool worker is busy
    return {"status": "ok"}


def _check_all(state: AppState) -> dict[str, str]:
    checks = {
        "database": _check_database,
        "broker": lambda s: s.dispatcher.check(),
        "storage": lambda s: s.storage.check(),
    }
    results = {}
    for name, check in checks.items():
        try:
            check(state)
            results[name] = "ok"
        except Exception as exc:  # any failure means not ready; the type is enough to diagnose
            results[name] = f"error: {type(exc).__name__}"
    return results


def _check_database(state: AppState) -> None:
    with state.sessions() as session:
        session.execute(text("SELECT 1"))


@router.get(
    "/readyz", summary="The database, broker and storage are reachable", responses=problem_responses(503, public=True)
)
async def readyz(state: StateDep) -> dict[str, Any]:
    results = await run_in_threadpool(_check_all, state)
    failing = {name: result for name, result in results.items() if result != "ok"}
    if failing:
        raise ServiceUnavailable("; ".join(f"{n}: {r}" for n, r in failing.items()))
    return {"status": "ok", "checks": results}


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin key)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **problem_responses(403),
    },
)
def metrics(state: StateDep, _admin: AdminDep) -> Response:
    with state.sessions() as session:
        counts = jobs_repository.count_by_status(session)
    for status in JobStatus:
        JOBS_BY_STATUS.labels(status=status.value).set(counts.get(status.value, 0))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
