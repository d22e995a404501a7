"""Webhook fixtures: a live server on its own fresh Postgres database whose delivery loop runs fast and may reach
127.0.0.1 (allow_private_network), a second live server with the default SSRF policy, and a receiver."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.client import LinguDistillClient, RetryPolicy
from service.db import session_scope
from service.dispatch import RecordingDispatcher
from service.keys.service import create_key
from service.settings import Settings
from service.storage import LocalStorage
from tests.client.live import JobDriver, LiveServer, ScriptedServer
from tests.service.conftest import pg_engine, pg_url  # noqa: F401 - fixtures: this folder's own database


@pytest.fixture(scope="session")
def sessions(pg_engine: Engine) -> sessionmaker[Session]:  # noqa: F811
    return sessionmaker(bind=pg_engine, expire_on_commit=False)


def _server(sessions: sessionmaker[Session], tmp: pytest.TempPathFactory, **settings: object) -> LiveServer:
    data = tmp.mktemp("webhooks")
    config = Settings(data_dir=data, rate_limit_per_s=10_000, rate_limit_burst=10_000, **settings)  # type: ignore[arg-type]
    app = create_app(
        config, sessions=sessions, storage=LocalStorage(data / "storage"), dispatcher=RecordingDispatcher()
    )
    return LiveServer(app).start()


@pytest.fixture(scope="session")
def server(sessions: sessionmaker[Session], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Delivers to the test's receiver on 127.0.0.1: private targets allowed, fast polling and retries."""
    live = _server(
        sessions,
        tmp_path_factory,
        allow_private_network=True,
        webhook_poll_interval_s=0.05,
        webhook_retry_base_s=0.2,
        webhook_max_attempts=3,
        webhook_timeout_s=2.0,
    )
    yield live
    live.stop()


@pytest.fixture(scope="session")
def strict_server(sessions: sessionmaker[Session], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The default SSRF policy (private networks refused); its delivery loop is off."""
    live = _server(sessions, tmp_path_factory, webhook_delivery_enabled=False)
    yield live
    live.stop()


@pytest.fixture
def new_key(sessions: sessionmaker[Session]) -> Callable[[], str]:
    def make() -> str:
        with session_scope(sessions) as session:
            return create_key(session, f"wh-{secrets.token_hex(4)}").key

    return make


@pytest.fixture
def api(server: LiveServer, new_key: Callable[[], str]) -> Iterator[LinguDistillClient]:
    with LinguDistillClient(server.url, new_key(), retry=RetryPolicy(max_attempts=2, backoff_s=0.01)) as client:
        yield client


@pytest.fixture
def driver(sessions: sessionmaker[Session]) -> JobDriver:
    return JobDriver(sessions)


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()
