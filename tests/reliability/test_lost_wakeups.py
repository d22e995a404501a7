"""Wake-ups lost to an API crash or a Redis outage are re-sent by the sweeper, once each (issue 14).

The API commits a job and crashes before its send (the buffered wake-up is dropped); later Redis restarts without
persistence and loses the re-sent message. Each time the sweeper sees a queued job unclaimed for unsent_after_s
whose message the broker no longer holds, and sends it again; while the message waits in the broker, no sweep sends
another. On Redis (a private server) with Postgres, where a real Celery worker then takes the job, and on the
embedded default (SQLite and kombu's filesystem broker).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from lingudistill.spec import JobSpec
from service.auth import Principal
from service.db import make_engine, make_sessionmaker, session_scope, upgrade_database
from service.dispatch import CeleryDispatcher, DispatchBuffer, _folder_messages, _redis_messages, _wakeup_job_id
from service.jobs.service import create_job
from service.keys.service import create_key
from service.models import Job
from service.settings import Settings
from service.storage import LocalStorage
from tests.reliability.conftest import PrivateRedis
from tests.worker.conftest import WorkerProcess, stack_env, wait_until
from worker.runtime import Runtime
from worker.settings import WorkerSettings
from worker.sweeper import resend_lost, sweep_once

UNSENT_AFTER_S = 0.5  # short for the test; the default is 15 s (docs/reliability.md has the measured figures)


@dataclass
class Setup:
    settings: Settings
    sessions: sessionmaker[Session]
    runtime: Runtime
    principal: Principal

    def messages_for(self, job_id: str) -> int:
        """How many wake-ups for `job_id` the broker holds (waiting or unacknowledged)."""
        url, queues = self.settings.broker_url_resolved, ["gpu"]
        if url.startswith("redis"):
            raw = list(_redis_messages(url, queues))
        else:
            raw = list(_folder_messages(self.settings.broker_transport_options["data_folder_in"], queues))
        return sum(_wakeup_job_id(m) == job_id for m in raw)

    def commit_then_crash(self, spec: JobSpec) -> str:
        """What an API that crashes between its commit and its send leaves: a committed, dispatched job, no message."""
        with session_scope(self.sessions) as session:
            job = create_job(session, self.principal, spec, self.settings, DispatchBuffer())  # the buffer is lost
            return job.id

    def sweep_after_unsent_window(self) -> None:
        """One sweep, late enough to see the job (the database may hold other tests' jobs: assert per job)."""
        time.sleep(UNSENT_AFTER_S * 1.5)
        resend_lost(self.runtime)


@pytest.fixture(params=["postgres+redis", "sqlite+filesystem"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "postgres+redis":
        server = request.getfixturevalue("private_redis")
        settings = Settings(
            database_url=request.getfixturevalue("fresh_pg_url"), broker_url=server.url, data_dir=tmp_path
        )
    else:
        settings = Settings(data_dir=tmp_path)
        upgrade_database(settings.database_url_resolved)
    engine = make_engine(settings.database_url_resolved)
    sessions = make_sessionmaker(engine)
    worker = WorkerSettings(unsent_after_s=UNSENT_AFTER_S)
    runtime = Runtime(settings, worker, sessions, LocalStorage(tmp_path / "storage"), CeleryDispatcher(settings))
    with session_scope(sessions) as session:
        key = create_key(session, f"lost-{secrets.token_hex(3)}")
    yield Setup(settings, sessions, runtime, Principal(key.tenant_id, key.key_id))
    engine.dispose()


def spec() -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "lost-wakeup",
            "student": "s3://models/student",
            "teacher": "s3://models/teacher",
            "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "distill": True}],
        }
    )


def test_a_wakeup_lost_to_an_api_crash_is_resent_once(setup: Setup) -> None:
    job_id = setup.commit_then_crash(spec())
    assert setup.messages_for(job_id) == 0
    setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1
    for _ in range(3):  # the message waits in the broker: nothing more is sent
        setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1


def test_concurrent_sweepers_resend_a_lost_wakeup_once(setup: Setup) -> None:
    """Every worker sweeps: of two that find the same lost wake-up, one sends it."""
    job_id = setup.commit_then_crash(spec())
    time.sleep(UNSENT_AFTER_S * 1.5)
    runtimes = [replace(setup.runtime, dispatcher=CeleryDispatcher(setup.settings)) for _ in range(4)]
    barrier = threading.Barrier(len(runtimes))

    def sweep(runtime: Runtime) -> None:
        barrier.wait()
        resend_lost(runtime)

    threads = [threading.Thread(target=sweep, args=(runtime,)) for runtime in runtimes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert setup.messages_for(job_id) == 1


def test_a_wakeup_lost_to_a_redis_restart_is_resent_once_and_a_real_worker_takes_it(
    private_redis: PrivateRedis, fresh_pg_url: str, tmp_path: Path
) -> None:
    pg_url = fresh_pg_url
    settings = Settings(database_url=pg_url, broker_url=private_redis.url, data_dir=tmp_path)
    sessions = make_sessionmaker(make_engine(pg_url))
    worker = WorkerSettings(unsent_after_s=UNSENT_AFTER_S)
    runtime = Runtime(settings, worker, sessions, LocalStorage(tmp_path / "storage"), CeleryDispatcher(settings))
    with session_scope(sessions) as session:
        key = create_key(session, f"lost-{secrets.token_hex(3)}")
    setup = Setup(settings, sessions, runtime, Principal(key.tenant_id, key.key_id))
    job_id = setup.commit_then_crash(spec())
    setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1

    private_redis.restart()  # no persistence: the waiting message is gone
    assert setup.messages_for(job_id) == 0
    setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1
    setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1

    # a real worker on that broker takes the re-sent wake-up and claims the job
    env = stack_env(pg_url, private_redis.url, (tmp_path / "storage").as_uri(), None, tmp_path / "scratch")
    process = WorkerProcess({**env, "LINGUDISTILL_WORKER_QUEUES": "gpu"}, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: _attempt(sessions, job_id) >= 1, 60, "the worker to claim the re-sent job")
    finally:
        process.stop()


def _attempt(sessions: sessionmaker[Session], job_id: str) -> int:
    with sessions() as session:
        job = session.get(Job, job_id)
        return job.attempt if job else 0


def test_a_sweep_during_the_redis_outage_goes_on_and_the_wakeup_is_resent_after_it(
    private_redis: PrivateRedis, fresh_pg_url: str, tmp_path: Path
) -> None:
    pg_url = fresh_pg_url
    settings = Settings(database_url=pg_url, broker_url=private_redis.url, data_dir=tmp_path)
    sessions = make_sessionmaker(make_engine(pg_url))
    worker = WorkerSettings(unsent_after_s=UNSENT_AFTER_S)
    runtime = Runtime(settings, worker, sessions, LocalStorage(tmp_path / "storage"), CeleryDispatcher(settings))
    with session_scope(sessions) as session:
        key = create_key(session, f"lost-{secrets.token_hex(3)}")
    setup = Setup(settings, sessions, runtime, Principal(key.tenant_id, key.key_id))
    job_id = setup.commit_then_crash(spec())
    private_redis.stop()
    time.sleep(UNSENT_AFTER_S * 1.5)
    assert sweep_once(runtime).unsent == 0  # the broker cannot be read: no error, nothing sent, the sweep goes on
    private_redis.start()
    setup.sweep_after_unsent_window()
    assert setup.messages_for(job_id) == 1
