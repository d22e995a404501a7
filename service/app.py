"""The FastAPI application."""

from __future__ import annotations

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
    for router in (jobs_router, datasets_router, ops_router, webhooks_router, keys_router, openai_router):
        app.include_router(router)
    app.include_router(ui_router)  # the web UI at /ui (issue 6): static files; the page calls the API above
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(PrometheusMiddleware)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: `uvicorn --factory service.app:app_from_env`."""
    return create_app()
