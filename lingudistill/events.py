"""What a training child tells its supervisor, as types: the one definition of the child-to-supervisor protocol.

A supervised run sends, in order:
    Validated -> TrainBegin {step, total} -> Step {record}... and CheckpointSaved {step, folder}
    -> Evaluating -> Done {steps, stopped_early, model_dir, report}          or at any point: Failed {kind, ...}
Each event travels as one JSON line (`encode`/`decode`): through the single-process child's pipe, or appended to
OUTPUT/events.jsonl by rank 0 of a torchrun child. The supervisor steers the child through two files in the
output folder (`Supervision`): STOP asks it to stop at the next step boundary, PAUSE to save a checkpoint there
first and then stop (Done with stopped_early; the job resumes from that checkpoint), and the supervisor's pulse, which
it touches every second, tells the child its supervisor still lives. A child whose pulse is older than the lease
is an orphan (its worker froze or died, and another attempt may own the job by now): it ends itself.
This module imports no torch: the supervisor, which never loads it, reads and writes these types too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from lingudistill.errors import FailureKind, classify

EVENTS_FILE = "events.jsonl"
STOP_FILE = "STOP"
PAUSE_FILE = "PAUSE"
PULSE_FILE = "PULSE"
PULSE_EVERY_S = 1.0
TRACEBACK_CHARS = 8000

log = logging.getLogger(__name__)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Validated(_Event):
    type: Literal["validated"] = "validated"


class TrainBegin(_Event):
    type: Literal["train_begin"] = "train_begin"
    step: int = Field(description="The step training starts from: 0, or the checkpoint resumed from.")
    total: int


class Step(_Event):
    """One optimiser step's record (metrics.jsonl's line): step, loss, loss_ce, loss_kd, lr, eval/<suite>, ..."""

    type: Literal["step"] = "step"
    record: dict[str, int | float]

    @property
    def step(self) -> int:
        return int(self.record["step"])


class CheckpointSaved(_Event):
    type: Literal["checkpoint"] = "checkpoint"
    step: int
    folder: str = Field(description="A staged copy (hard links) that the supervisor uploads, then deletes.")


class Evaluating(_Event):
    type: Literal["evaluating"] = "evaluating"


class Done(_Event):
    type: Literal["done"] = "done"
    steps: int
    stopped_early: bool
    model_dir: str | None
    report: dict[str, JsonValue] | None


class Notice(_Event):
    """Something the job's owner should see that is not a stage: an experiment tracker's run link (info), or a
    tracker that cannot be reached (warning; training goes on)."""

    type: Literal["notice"] = "notice"
    level: Literal["info", "warning"]
    message: str
    data: dict[str, JsonValue] = Field(default_factory=dict)


class Failed(_Event):
    type: Literal["error"] = "error"
    kind: FailureKind
    error: str = Field(description="The exception's class name.")
    message: str
    traceback: str = ""


Event = Annotated[
    Validated | TrainBegin | Step | CheckpointSaved | Evaluating | Notice | Done | Failed,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def encode(event: Event) -> str:
    return event.model_dump_json()


def decode(line: str | bytes) -> Event:
    return _EVENT.validate_json(line)


def jsonable(value: object) -> JsonValue:
    """`value` as plain JSON (a report may hold numpy scalars or paths)."""
    parsed: JsonValue = json.loads(json.dumps(value, default=str))
    return parsed


def done_event(steps: int, stopped_early: bool, model_dir: Path | None, report: dict[str, object] | None) -> Done:
    report_json = jsonable(report) if report is not None else None
    return Done(
        steps=steps,
        stopped_early=stopped_early,
        model_dir=str(model_dir) if model_dir is not None else None,
        report=report_json if isinstance(report_json, dict) else None,
    )


def failed_event(exc: BaseException) -> Failed:
    """The error as the supervisor needs it: whose fault (classified here, where the exception is), and why."""
    try:
        kind = classify(exc)
    except Exception:  # the classifier itself failed: nothing the user gave us is known to be at fault
        kind = FailureKind.infrastructure
    trace = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
    return Failed(kind=kind, error=type(exc).__name__, message=str(exc) or type(exc).__name__, traceback=trace)


# --- where events go ----------------------------------------------------------------------------------------------
class EventSink(Protocol):
    def send(self, event: Event) -> None: ...


class PipeSink:
    """The single-process child's end of its pipe. Locked: experiment trackers send notices from their threads."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def send(self, event: Event) -> None:
        with self.lock:
            self.conn.send_bytes(encode(event).encode())


class NoSink:
    """The other ranks of a torchrun child: rank 0 alone reports."""

    def send(self, event: Event) -> None:
        pass


class FileSink:
    """OUTPUT/events.jsonl, appended by rank 0 of a torchrun child; one flushed line per event."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()

    def send(self, event: Event) -> None:
        with self.lock, self.path.open("a") as handle:
            handle.write(encode(event) + "\n")


# --- how the supervisor steers the child ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Supervision:
    """The files a supervised child reads and writes; the same for both kinds of child."""

    output_dir: str
    orphan_after_s: float  # the lease: a child whose supervisor is silent this long ends itself
    uploads_dir: str  # checkpoints are staged here (hard links) for the supervisor's upload

    @property
    def stop_file(self) -> Path:
        return Path(self.output_dir) / STOP_FILE

    @property
    def pause_file(self) -> Path:
        return Path(self.output_dir) / PAUSE_FILE

    @property
    def pulse_file(self) -> Path:
        return Path(self.output_dir) / PULSE_FILE

    @property
    def events_file(self) -> Path:
        return Path(self.output_dir) / EVENTS_FILE

    def to_json(self) -> str:
        return json.dumps(vars(self))

    @classmethod
    def from_json(cls, text: str) -> Supervision:
        return cls(**json.loads(text))


class Pulse:
    """The supervisor's side: touches the pulse file every PULSE_EVERY_S from a thread of its own, so that a
    supervisor waiting out a database outage still counts as alive; a frozen (SIGSTOP) or dead one does not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"pulse-{path.parent.name}", daemon=True)

    def start(self) -> Pulse:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def _beat(self) -> None:
        while not self.stopped.wait(PULSE_EVERY_S):
            try:
                self.path.touch()
            except OSError:  # the folder is being removed: the attempt is ending
                return


def watch_pulse(supervision: Supervision) -> threading.Thread:
    """The child's side: a daemon thread that ends this process once the supervisor's pulse is older than the lease.

    It exits hard (os._exit) even mid-step: by then another attempt may have claimed the job and be training on the
    same GPU, and nothing this process still computes can be recorded."""

    def watch() -> None:
        while True:
            time.sleep(PULSE_EVERY_S)
            try:
                silent = time.time() - supervision.pulse_file.stat().st_mtime
            except OSError:
                silent = float("inf")  # the folder is gone: its attempt ended
            if silent > supervision.orphan_after_s:
                log.error("the supervisor has been silent for %.0f s: this child is orphaned and stops", silent)
                os._exit(3)

    thread = threading.Thread(target=watch, name="pulse-watch", daemon=True)
    thread.start()
    return thread
