"""Wake-ups reach the broker only after the commit; a real send to Redis is read back from the queue."""

from __future__ import annotations

import secrets

import pytest

from service.dispatch import RUN_JOB_TASK, CeleryDispatcher, DispatchBuffer, RecordingDispatcher, Wakeup
from service.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/15"


def test_buffer_flushes_once_and_discards_on_rollback():
    dispatcher, buffer = RecordingDispatcher(), DispatchBuffer()
    buffer.add("job_1", "gpu", 5)
    buffer.discard()
    buffer.flush(dispatcher)
    assert dispatcher.sent == []
    buffer.add("job_2", "gpu", 5)
    buffer.flush(dispatcher)
    buffer.flush(dispatcher)
    assert dispatcher.sent == [Wakeup("job_2", "gpu", 5)]


def test_a_broker_failure_after_commit_does_not_fail_the_request():
    class Down:
        def send(self, wakeup):
            raise ConnectionError("broker down")

    buffer = DispatchBuffer()
    buffer.add("job_3", "gpu", 5)
    buffer.flush(Down())  # logged; the sweeper re-sends queued jobs


@pytest.mark.redis
def test_celery_dispatcher_sends_only_the_job_id_to_redis():
    from kombu import Connection

    queue = f"test-{secrets.token_hex(4)}"
    dispatcher = CeleryDispatcher(Settings(broker_url=REDIS_URL))
    dispatcher.check()
    dispatcher.send(Wakeup("job_abc", queue, 9))
    with Connection(REDIS_URL) as connection:
        simple = connection.SimpleQueue(queue)
        message = simple.get(timeout=5)
        assert message.headers["task"] == RUN_JOB_TASK
        args, kwargs, _ = message.decode()
        assert args == ["job_abc"] and kwargs == {}
        assert message.properties.get("priority") == 0  # the spec's 9 is Redis's most urgent 0
        message.ack()
        simple.close()
        connection.default_channel.client.delete(queue)


def test_embedded_broker_needs_no_server(tmp_path):
    dispatcher = CeleryDispatcher(Settings(data_dir=tmp_path))
    dispatcher.check()
    dispatcher.send(Wakeup("job_x", "gpu", 5))
    assert any((tmp_path / "broker").iterdir())


def test_jobs_api_sends_after_commit_to_the_embedded_broker(
    make_client, new_key, spec_body, tmp_path, sessions, settings, storage
):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings, sessions=sessions, storage=storage, dispatcher=CeleryDispatcher(settings))
    with TestClient(app, headers={"Authorization": f"Bearer {new_key()}"}) as client:
        assert client.post("/v1/jobs", json=spec_body()).status_code == 201
    assert len(list((settings.data_dir / "broker").iterdir())) == 1
