"""The single-process training child: a spawned process (never forked) that runs `pipeline.run_supervised`.

Its events (lingudistill.events) go to the supervisor through a one-way pipe, one JSON line per message.
It leads its own process group (so a cancel can SIGKILL the group), dies with its parent (PR_SET_PDEATHSIG), ends
itself when the supervisor's pulse stops (a frozen worker), and writes every thread's stack to `stack_file` on
SIGUSR1 (the stall watchdog's diagnosis). Only this process imports torch and may initialise CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from lingudistill.events import Event, PipeSink, Supervision, decode, failed_event
from worker.launcher import LaunchRequest

PR_SET_PDEATHSIG = 1
STACK_FILE = "stack.txt"


@dataclass(frozen=True)
class ChildConfig:
    spec_json: str  # the resolved JobSpec, local URIs already in place
    origin_json: str  # the spec as submitted (dataset:// URIs), recorded in the report's provenance
    supervision_json: str
    resume: bool
    stack_file: str
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this job; None leaves it as inherited


def main(conn: Connection, config: ChildConfig) -> None:
    """The child's entry point (multiprocessing target). Exit code 0 after Done, 1 after Failed."""
    _detach(config)
    sink = PipeSink(conn)
    try:
        _run(sink, config)
    except BaseException as exc:
        sink.send(failed_event(exc))
        conn.close()
        sys.exit(1)
    conn.close()


def _detach(config: ChildConfig) -> None:
    os.setpgrp()  # own process group: the supervisor kills the group, helpers included
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a killed worker takes its training child with it
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
    stack = open(config.stack_file, "w")  # noqa: SIM115 - stays open for faulthandler for the process's life
    faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)
    if config.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.gpu


def _run(sink: PipeSink, config: ChildConfig) -> None:
    from lingudistill.pipeline import run_supervised
    from lingudistill.spec import JobSpec

    spec = JobSpec.model_validate_json(config.spec_json)
    origin = JobSpec.model_validate_json(config.origin_json)
    supervision = Supervision.from_json(config.supervision_json)
    run_supervised(spec, supervision, sink, resume=config.resume, origin=origin)


class SingleProcessLauncher:
    def launch(self, request: LaunchRequest) -> SpawnedChild:
        context = multiprocessing.get_context("spawn")  # never fork: the child starts clean and owns CUDA
        reader, writer = context.Pipe(duplex=False)
        config = ChildConfig(
            request.spec.model_dump_json(),
            request.origin.model_dump_json(),
            request.supervision.to_json(),
            request.resume,
            str(request.workdir / STACK_FILE),
            request.gpus,
        )
        process = context.Process(target=main, args=(writer, config), name=f"train-{request.workdir.parent.name}")
        process.start()
        writer.close()  # the child holds the only writer: EOF on our end means it is gone
        return SpawnedChild(process, reader, request.workdir / STACK_FILE)


class SpawnedChild:
    """The spawned child as a TrainingChild: events from its pipe, `ended` at EOF."""

    def __init__(self, process: BaseProcess, conn: Connection, stack_file: Path) -> None:
        self.process, self.conn, self.stack_file = process, conn, stack_file
        self.ended = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def events(self, timeout: float) -> Iterator[Event]:
        try:
            while self.conn.poll(timeout):
                yield decode(self.conn.recv_bytes())
                timeout = 0
        except (EOFError, OSError):
            self.ended = True  # the supervisor joins the process, heartbeating meanwhile

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process.is_alive():
            self.process.kill()

    def dump_stacks(self, wait_s: float) -> str:
        try:
            os.kill(self.pid, signal.SIGUSR1)  # faulthandler in the child writes every thread's stack
        except ProcessLookupError:
            return ""
        time.sleep(wait_s)
        return self.stack_file.read_text(errors="replace")[-16000:] if self.stack_file.exists() else ""
