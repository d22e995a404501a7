"""What a worker process shares between its job slots: settings, database sessions, storage, the dispatcher."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_sessionmaker
from service.dispatch import CeleryDispatcher, Dispatcher
from service.settings import Settings, get_settings
from service.storage import Storage, make_storage
from worker.settings import WorkerSettings, get_worker_settings


class GpuSlots:
    """Hands each running job one GPU id (CUDA_VISIBLE_DEVICES of its child): one job per GPU."""

    def __init__(self, gpus: str | None) -> None:
        self.free = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
        self.lock = threading.Lock()

    @contextmanager
    def take(self) -> Iterator[str | None]:
        if self.free is None:
            yield None
            return
        with self.lock:
            gpu = self.free.pop(0) if self.free else None
        try:
            yield gpu
        finally:
            if gpu is not None:
                with self.lock:
                    self.free.append(gpu)


@dataclass
class Runtime:
    settings: Settings
    worker: WorkerSettings
    sessions: sessionmaker[Session]
    storage: Storage
    dispatcher: Dispatcher
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    gpus: GpuSlots = field(default_factory=lambda: GpuSlots(None))

    @property
    def scratch_dir(self) -> Path:
        return (self.worker.scratch_dir or self.settings.data_dir / "work").resolve()


def build_runtime(settings: Settings | None = None, worker: WorkerSettings | None = None) -> Runtime:
    settings = settings or get_settings()
    worker = worker or get_worker_settings()
    sessions = make_sessionmaker(make_engine(settings.database_url_resolved, **worker_engine_options(settings)))
    return Runtime(
        settings, worker, sessions, make_storage(settings), CeleryDispatcher(settings), gpus=GpuSlots(worker.gpus)
    )


def worker_engine_options(settings: Settings) -> dict[str, Any]:
    """Postgres: a worker transaction never outlives the lease. A worker frozen inside a transaction (SIGSTOP, a VM
    pause) would otherwise hold its job row's lock forever, and the sweeper, which must re-queue that very job,
    would wait on it with every other job behind it. The server ends such a session after lease_s; the frozen
    attempt has lost its lease by then anyway, and its next write fails (fenced out). (Reliability suite, issue 9.)
    """
    if not settings.database_url_resolved.startswith("postgresql"):
        return {}
    timeout_ms = int(settings.lease_s * 1000)
    return {"connect_args": {"options": f"-c idle_in_transaction_session_timeout={timeout_ms}"}}


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built on first use (after Celery has started, never at import)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
        return _runtime
