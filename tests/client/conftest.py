"""Client and CLI fixtures: a live uvicorn server on its own fresh Postgres database (migrated with Alembic),
committed for real, since a separate process-like client talks to it over HTTP."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from tests.client.live import JobDriver, LiveServer
from tests.service.conftest import pg_engine, pg_url  # noqa: F401 - fixtures: this folder's own database

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(scope="session")
def sessions(pg_engine: Engine) -> sessionmaker[Session]:  # noqa: F811
    return sessionmaker(bind=pg_engine, expire_on_commit=False)


@pytest.fixture(scope="session")
def storage(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    return LocalStorage(tmp_path_factory.mktemp("client-storage"))


@pytest.fixture(scope="session")
def server(
    sessions: sessionmaker[Session], storage: LocalStorage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("client-data"),
        rate_limit_per_s=10_000,
        rate_limit_burst=10_000,
        sse_poll_interval_s=0.05,
        webhook_delivery_enabled=False,
    )
    app = create_app(settings, sessions=sessions, storage=storage, dispatcher=RecordingDispatcher())
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def new_key(sessions: sessionmaker[Session]) -> Callable[[], str]:
    def make() -> str:
        with session_scope(sessions) as session:
            return create_key(session, f"ci-{secrets.token_hex(4)}").key

    return make


@pytest.fixture
def api_key(new_key: Callable[[], str]) -> str:
    return new_key()


@pytest.fixture
def api(server: LiveServer, api_key: str) -> Iterator[LinguDistillClient]:
    with LinguDistillClient(server.url, api_key, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
def driver(sessions: sessionmaker[Session]) -> JobDriver:
    return JobDriver(sessions)


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    """A spec over a local chat-format JSONL (uploaded by `submit`), a local eval suite, and s3 models."""

    def make(name: str, min_recovery: float = 0.25, **extra: Any) -> Path:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        records = [{"prompt": f"what is {i} + {i}?", "response": str(2 * i)} for i in range(5)]
        (data / "text.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        items = [{"question": "2 + 2?", "choices": ["3", "4"], "answer": 1}]
        (data / "arc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
        spec = {
            "name": name,
            "student": "s3://models/student",
            "teacher": "s3://models/teacher",
            "mixture": [
                {"name": "text", "uri": "data/text.jsonl", "weight": 1.0, "distill": True},
                {"name": "vqa", "uri": "s3://data/vqa.jsonl", "weight": 1.0},
            ],
            "training": {"max_steps": 4},
            "evaluation": {
                "language": [{"name": "arc", "uri": "data/arc.jsonl"}],
                "vision": [{"name": "vqa", "uri": "s3://eval/vqa.jsonl"}],
                "gates": {"min_recovery": min_recovery, "max_vision_drop": 0.05},
            },
            **extra,
        }
        path = tmp_path / f"{name}.yaml"
        import yaml

        path.write_text(yaml.safe_dump(spec))
        return path

    return make
