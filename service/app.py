"""The FastAPI application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from service.datasets.router import router as datasets_router
from service.db import make_engine, make_sessionmaker
from service.deps import AppState
from service.dispatch import CeleryDispatcher, Dispatcher
from service.errors import install_error_handlers
from service.jobs.router import router as jobs_router
from service.keys.router import router as keys_router
from service.limits import BodySizeLimit
from service.openai_api.router import router as openai_router
from service.ops.metrics import PrometheusMiddleware
from service.ops.router import router as ops_router
from service.ratelimit import make_limiter
from service.settings import Settings, get_settings
from service.storage import Storage, make_storage
from service.sweeps.router import router as sweeps_router
from service.ui.router import router as ui_router
from service.webhooks.delivery import delivery_lifespan
from service.webhooks.router import router as webhooks_router

DESCRIPTION = """Submit and follow LinguDistill recovery jobs.

Every route needs `Authorization: Bearer <api key>` except /healthz, /readyz and the docs. Another tenant's object
answers 404. Errors are RFC 9457 `application/problem+json` with a stable `code`."""


def create_app(
    settings: Settings | None = None,
    *,
    sessions: sessionmaker[Session] | None = None,
    storage: Storage | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    # lifespan: the webhook delivery loop (issue 7) runs while the API serves
    app = FastAPI(title="LinguDistill API", version="1.0.0", description=DESCRIPTION, lifespan=delivery_lifespan)
    app.state.services = AppState(
        settings=settings,
        sessions=sessions or make_sessionmaker(make_engine(settings.database_url_resolved)),
        storage=storage or make_storage(settings),
        dispatcher=dispatcher or CeleryDispatcher(settings),
        limiter=make_limiter(settings),
    )
    install_error_handlers(app)
    for router in (
        jobs_router,
        sweeps_router,
        datasets_router,
        ops_router,
        webhooks_router,
        keys_router,
        openai_router,
    ):
        app.include_router(router)
    app.include_router(ui_router)  # the web UI at /ui (issue 6): static files; the page calls the API above
    install_openapi(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(PrometheusMiddleware)
    return app


BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`ldk_...`) from `lingudistill keys create` or POST /v1/keys.",
}


def install_openapi(app: FastAPI) -> None:
    """The generated schema plus the Bearer scheme, required on every route that declares a 401 (the routes
    `problem_responses` marks as authenticated), so generated clients send the key."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = {"bearerAuth": BEARER_SCHEME}
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "401" in operation.get("responses", {}):
                        operation["security"] = [{"bearerAuth": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """uvicorn factory: `uvicorn --factory service.app:app_from_env`."""
    return create_app()
