"""A Redis restart mid-run: the job still finishes (a private redis-server, never the shared one)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.models import JobStatus
from tests.service.conftest import free_port
from tests.worker.conftest import Stack, job_spec, make_stack, wait_until


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=subprocess.DEVNULL)
        wait_until(self._pings, 10, "the private redis")

    def _pings(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_job_finishes_across_a_redis_restart(
    stack: Stack, private_redis: PrivateRedis, tiny_world: Path, tmp_path: Path
) -> None:
    broker = f"redis://127.0.0.1:{private_redis.port}/0"
    own = make_stack(stack.settings.database_url or "", broker, stack.storage.bucket,
                     stack.settings.s3_endpoint_url or "", tmp_path, stack.queue + "-redis")  # fmt: skip
    worker = own.worker()
    try:
        job_id = own.submit(job_spec(tiny_world, own.queue, max_steps=24, checkpoint_every=4))
        own.wait_status(job_id, {JobStatus.running}, timeout=90)

        private_redis.stop()
        private_redis.start()

        job = own.wait_status(job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=90)
        assert job.status is JobStatus.succeeded, job.failure_message
        assert job.attempt == 1
        assert worker.process is not None and worker.process.poll() is None  # the worker survived the restart
    finally:
        worker.stop()
