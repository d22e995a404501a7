"""Helpers shared by the client and webhook tests: a restartable live uvicorn server, a TCP proxy that can cut
its connections, a scripted HTTP server, and a driver that moves a job through its states as a worker would."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lingudistill.spec import JobSpec
from service.db import session_scope
from service.jobs import repository
from service.models import FailureReason, Job, JobStatus
from tests.service.conftest import free_port

S = JobStatus


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class LiveServer:
    """uvicorn in a thread on a fixed port."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.app, self.port = app, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server is not None and self.server.started, what="uvicorn to start")
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)


class CuttingProxy:
    """A TCP proxy to `target_port` that records each request head and can cut every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.heads: list[str] = []
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record and data[:4] in (b"GET ", b"POST"):
                    self.heads.append(data.decode("latin-1"))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection, as a load balancer timing out or restarting would."""
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.cut()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Scripted:
    """A scripted response: status, headers, body (bytes or a JSON-able value)."""

    status: int
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """An HTTP server on 127.0.0.1 that answers from a script (the last entry repeats) and records requests."""

    def __init__(self, script: list[Scripted] | None = None, port: int = 0) -> None:
        self.script = list(script or [Scripted(200, {})])
        self.requests: list[Recorded] = []
        self.on_request: Callable[[Recorded], None] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                recorded = Recorded(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                outer.requests.append(recorded)
                if outer.on_request is not None:
                    outer.on_request(recorded)
                reply = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JobDriver:
    """Moves a job through its lifecycle with the service's repository functions, exactly as a worker does."""

    def __init__(self, sessions: sessionmaker[Session], worker_id: str = "test-worker") -> None:
        self.sessions, self.worker_id = sessions, worker_id

    def find(self, name: str, timeout: float = 15.0) -> str:
        def lookup() -> str | None:
            with session_scope(self.sessions) as session:
                return session.scalar(select(Job.id).where(Job.name == name).order_by(Job.created_at.desc()))

        return wait_until(lookup, timeout, f"job {name} to be submitted")

    def start(self, job_id: str) -> tuple[int, JobSpec]:
        with session_scope(self.sessions) as session:
            claim = repository.claim_job(session, job_id, self.worker_id, lease_s=60)
        assert claim is not None, f"could not claim {job_id}"
        self.move(job_id, claim.attempt, S.running)
        return claim.attempt, claim.spec

    def move(self, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> None:
        with session_scope(self.sessions) as session:
            assert repository.transition(session, job_id, attempt, status, **fields), f"{job_id} -> {status}"

    def finish_pause(self, job_id: str, attempt: int, stopped_at: int) -> None:
        with session_scope(self.sessions) as session:
            assert repository.finish_pause(session, job_id, attempt, stopped_at) is not None

    def step(self, job_id: str, attempt: int, step: int, total: int, loss: float) -> None:
        with session_scope(self.sessions) as session:
            repository.update_progress(
                session, job_id, attempt, step=step, total_steps=total, step_time_s=0.1, latest_metrics={"loss": loss}
            )
            repository.record_metrics(session, job_id, attempt, [(step, "loss", loss)])

    def event(self, job_id: str, attempt: int, type: str, data: dict[str, Any]) -> int:
        with session_scope(self.sessions) as session:
            return repository.append_event(session, job_id, attempt, type, data)

    def checkpoint(self, job_id: str, attempt: int, step: int, prefix: str, manifest: dict[str, str]) -> None:
        with session_scope(self.sessions) as session:
            repository.record_checkpoint(
                session, job_id, attempt, step=step, storage_prefix=prefix, manifest=manifest, size_bytes=1
            )

    def succeed(self, job_id: str, attempt: int, report: dict[str, Any] | None) -> None:
        self.move(job_id, attempt, S.evaluating)
        self.move(job_id, attempt, S.succeeded, report=report, step=4)

    def fail(self, job_id: str, attempt: int, message: str = "the student and teacher vocabularies differ") -> None:
        self.move(job_id, attempt, S.failed, failure_reason=FailureReason.bad_input, failure_message=message)


def make_report(spec: JobSpec, after_language: float) -> dict[str, Any]:
    """A real report (lingudistill.evaluation.build_report): teacher 0.8, student before 0.4, vision 0.5 -> 0.5, so
    the mean recovery is (after - 0.4) / 0.4 and the gates of `spec` decide."""
    from lingudistill.evaluation.report import build_report
    from lingudistill.evaluation.scoring import SuiteScore

    def scores(kind: str, value: float) -> dict[str, SuiteScore]:
        suites = spec.evaluation.language if kind == "language" else spec.evaluation.vision
        return {s.name: SuiteScore(s.name, kind, "acc", value, {"acc": value}, 10) for s in suites}  # type: ignore[arg-type]

    teacher = scores("language", 0.8)
    before = scores("language", 0.4) | scores("vision", 0.5)
    after = scores("language", after_language) | scores("vision", 0.5)
    return build_report(spec, teacher=teacher, before=before, after=after, metrics_path=None, provenance={})
