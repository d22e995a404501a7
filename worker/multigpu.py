"""Multi-GPU jobs in the worker: `resources.gpus: N > 1` trains under torchrun instead of the spawned child.

The supervisor (worker.supervisor) treats both kinds of training child alike. Each gives it
    a process     pid (the leader of its process group), is_alive(), kill(), join(timeout), exitcode;
    messages      read(timeout) -> the child's messages, the dicts worker.child sends; `ended` once it is gone;
    a stop flag   set() asks the child to stop at its next step boundary.
Single process: a multiprocessing.Process, its pipe (supervisor.PipeMessages) and a multiprocessing.Event.
Multi-GPU (here):
    Launched      `python -m torch.distributed.run ... -m lingudistill.distributed SPEC --output DIR [--resume]`
                  (lingudistill.distributed.launch_command) as a subprocess leading its own process group, with
                  CUDA_VISIBLE_DEVICES set to the job's GPUs; torchrun's stdout and stderr go to ranks.log.
    EventsFile    tails DIR/events.jsonl, which rank 0 writes with the same messages as the pipe. An error line
                  ({error, message}) gets its failure reason from the exception's class name (CLASSIFIED, the
                  classes worker.child.classify uses) and the tail of ranks.log as its traceback.
    StopFile      creating DIR/STOP is the cooperative stop every rank checks at each step.
torchrun starts every rank in a session of its own, so a SIGKILL to torchrun's group would miss them:
`Launched.kill_ranks()` kills each rank's group first. If the worker dies, torchrun gets SIGTERM
(PR_SET_PDEATHSIG) and terminates its ranks itself.

GPUs: `take_gpus` hands a job N of the worker's GPUs (`--gpus`, else CUDA_VISIBLE_DEVICES, else `nvidia-smi`).
With LINGUDISTILL_WORKER_ALLOW_CPU_RANKS=true a worker that has too few GPUs runs the ranks on CPU (gloo,
LINGUDISTILL_DEVICE=cpu): for tests and development only. Otherwise a job needing more GPUs than are free is an
infrastructure failure (retried, possibly on another worker) whose message says how many it needed.

This module imports no torch: the Celery process never does (lingudistill.launch is torch-free).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lingudistill.launch import EVENTS, STOP_FILE, launch_command
from worker.child import link_tree

if TYPE_CHECKING:
    from lingudistill.spec import JobSpec
    from worker.runtime import Runtime

RANKS_LOG = "ranks.log"
PR_SET_PDEATHSIG = 1
POLL_S = 0.05
TRACEBACK_CHARS = 8000

# Exception class names -> failure reason, as worker.child.classify decides by class (kept equal by a test).
BAD_INPUT = "DataError ModelLoadError IncompatibleModels UnsupportedModel SpecError ValidationError FileNotFoundError"
CLASSIFIED: dict[str, str] = {
    **dict.fromkeys(BAD_INPUT.split(), "bad_input"),
    **dict.fromkeys(("MemoryError", "OutOfMemoryError"), "out_of_memory"),
}


class MultiGpuSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINGUDISTILL_WORKER_", extra="ignore")

    allow_cpu_ranks: bool = Field(
        False, description="A multi-GPU job on a worker without enough GPUs runs its ranks on CPU (tests, dev)."
    )


@lru_cache
def get_multigpu_settings() -> MultiGpuSettings:
    return MultiGpuSettings()


class NotEnoughGpus(RuntimeError):
    pass


def classify_name(name: str) -> str:
    return CLASSIFIED.get(name, "infrastructure")


# --- GPUs ---------------------------------------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPU ids this worker may hand out when no --gpus is configured (no torch, no CUDA initialisation)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []


@contextmanager
def take_gpus(rt: Runtime, count: int) -> Iterator[str | None]:
    """The job's CUDA_VISIBLE_DEVICES: one GPU (rt.gpus, unchanged), or `count` ids joined by commas.

    "" means CPU ranks (allow_cpu_ranks). Raises NotEnoughGpus before the job starts when too few are free."""
    if count <= 1:
        with rt.gpus.take() as gpu:
            yield gpu
        return
    slots = rt.gpus
    if slots.free is not None:  # --gpus: this worker's own list, shared with its other job slots
        with slots.lock:
            free = len(slots.free)
            taken = slots.free[:count] if free >= count else []
            del slots.free[: len(taken)]
        if not taken and not get_multigpu_settings().allow_cpu_ranks:
            raise NotEnoughGpus(f"the job needs {count} GPUs; {free} of this worker's GPUs are free")
        try:
            yield ",".join(taken)
        finally:
            with slots.lock:
                slots.free.extend(taken)
        return
    visible = visible_gpus()
    if len(visible) >= count:
        yield ",".join(visible[:count])
    elif get_multigpu_settings().allow_cpu_ranks:
        yield ""
    else:
        raise NotEnoughGpus(f"the job needs {count} GPUs; this worker sees {len(visible)}")


# --- the launched child ---------------------------------------------------------------------------------------------
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork: preexec_fn only calls it


def _detach(parent: int) -> None:
    """In torchrun, before exec: lead a process group; get SIGTERM when the worker dies (torchrun then stops
    its ranks itself; SIGKILL would leave them orphaned)."""
    os.setpgrp()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = children_of(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Launched:
    """torchrun as the training child, with the multiprocessing.Process surface the supervisor uses."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as handle:
            self.popen = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                preexec_fn=lambda parent=os.getpid(): _detach(parent),  # prctl: start_new_session is not enough
            )  # fmt: skip
        self.pid = self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        self.kill_ranks()
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def kill_ranks(self) -> None:
        """SIGKILL every rank's process group (torchrun starts each rank in a session of its own), then torchrun's
        other descendants; torchrun itself is left to the caller's killpg."""
        for pid in descendants(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # ESRCH for a pid that leads no group: killed below
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def dump_stacks(self, wait_s: float) -> str:
        """The ranks' stacks (stall watchdog): SIGABRT makes faulthandler (PYTHONFAULTHANDLER=1) print every
        thread of each rank into ranks.log; the ranks die of it, and the caller kills the rest."""
        for pid in children_of().get(self.pid, []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGABRT)
        time.sleep(wait_s)
        return log_tail(self.log, 16000)


def log_tail(path: Path, chars: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - chars))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


class StopFile:
    """The stop flag of a torchrun child: DIR/STOP, which every rank checks at each step boundary."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self) -> None:
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()


class EventsFile:
    """The torchrun child's messages: DIR/events.jsonl, tailed; `ended` once torchrun exited and all is read.

    Messages are rewritten to the pipe's form: a checkpoint folder is first hard-linked to DIR/uploads (the
    engine may prune its own folder while the upload runs), and an error gets `kind` and `traceback`; it is
    held back until torchrun has exited, so the traceback includes every rank's output."""

    def __init__(self, output: Path, process: Launched) -> None:
        self.path, self.uploads, self.process = output / EVENTS, output / "uploads", process
        self.offset, self.partial = 0, b""
        self.error: dict[str, Any] | None = None
        self.ended = False

    def read(self, timeout: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.ended:
            exited = not self.process.is_alive()  # before reading: lines written before the exit are all read
            lines = self._new_lines()
            if lines:
                for line in lines:
                    message = self._message(line)
                    if message is not None:
                        yield message
                return
            if exited:
                if self.error is not None:
                    yield {**self.error, "traceback": log_tail(self.process.log, TRACEBACK_CHARS)}
                self.ended = True
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _new_lines(self) -> list[bytes]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        return [line for line in lines if line.strip()]

    def _message(self, line: bytes) -> dict[str, Any] | None:
        message = json.loads(line)
        if message["type"] == "checkpoint":
            folder = Path(message["folder"])
            message["folder"] = str(link_tree(folder, self.uploads / folder.name))
        elif message["type"] == "error":
            self.error = {**message, "kind": classify_name(message["error"])}
            return None
        return message


def launch(
    spec: JobSpec, workdir: Path, output: Path, resume: bool, gpus: str | None
) -> tuple[Launched, EventsFile, StopFile]:
    """Start torchrun on `spec.resources.gpus` ranks; `gpus` is CUDA_VISIBLE_DEVICES, "" for CPU ranks."""
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if gpus == "":
        env["LINGUDISTILL_DEVICE"] = "cpu"
    process = Launched(launch_command(spec_path, output, spec.resources.gpus, resume), env, workdir / RANKS_LOG)
    return process, EventsFile(output, process), StopFile(output / STOP_FILE)
