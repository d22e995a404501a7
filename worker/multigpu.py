"""Multi-GPU jobs in the worker: `resources.gpus: N > 1` trains under torchrun instead of the spawned child.

`TorchrunLauncher` is the supervisor's Launcher (worker.launcher) for them:
    launches      `python -m torch.distributed.run ... -m lingudistill.distributed SPEC --output DIR --origin SPEC
                  --supervision FILE [--resume]` (lingudistill.launch.launch_command) as a subprocess leading its
                  own process group, with CUDA_VISIBLE_DEVICES set to the job's GPUs; torchrun's output goes to
                  ranks.log.
    TorchrunChild tails DIR/events.jsonl, which rank 0 writes with the same typed events as the pipe. A Failed
                  event is held back until torchrun has exited, then sent with the tail of ranks.log (every rank's
                  output) as its traceback.
torchrun starts every rank in a session of its own, so a SIGKILL to torchrun's group would miss them:
`TorchrunChild.kill()` kills each rank's group first. If the worker dies, torchrun gets SIGTERM
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
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lingudistill.events import Event, Failed, decode
from lingudistill.launch import launch_command
from worker.launcher import LaunchRequest

if TYPE_CHECKING:
    from worker.runtime import Runtime

RANKS_LOG = "ranks.log"
PR_SET_PDEATHSIG = 1
POLL_S = 0.05
TRACEBACK_CHARS = 8000


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


class TorchrunLauncher:
    def launch(self, request: LaunchRequest) -> TorchrunChild:
        """torchrun on `spec.resources.gpus` ranks; `request.gpus` is CUDA_VISIBLE_DEVICES, "" for CPU ranks."""
        spec_path, origin_path = request.workdir / "spec.json", request.workdir / "origin.json"
        supervision_path = request.workdir / "supervision.json"
        spec_path.write_text(request.spec.model_dump_json())
        origin_path.write_text(request.origin.model_dump_json())
        supervision_path.write_text(request.supervision.to_json())
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        if request.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = request.gpus
        if request.gpus == "":
            env["LINGUDISTILL_DEVICE"] = "cpu"
        output = request.supervision.output_dir
        argv = launch_command(spec_path, output, request.spec.resources.gpus, request.resume,
                              origin=origin_path, supervision=supervision_path)  # fmt: skip
        return TorchrunChild(argv, env, request.workdir / RANKS_LOG, request.supervision.events_file)


class TorchrunChild:
    """torchrun as a TrainingChild: its events tailed from DIR/events.jsonl; `ended` once it exited and all is read."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, events_file: Path) -> None:
        self.log, self.events_file = log, events_file
        with log.open("ab") as handle:
            self.popen = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                preexec_fn=lambda parent=os.getpid(): _detach(parent),  # prctl: start_new_session is not enough
            )  # fmt: skip
        self.offset, self.partial = 0, b""
        self.failure: Failed | None = None
        self.ended = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL every rank's process group (torchrun starts each rank in a session of its own), then torchrun's
        other descendants, then torchrun's own group."""
        for pid in descendants(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # ESRCH for a pid that leads no group: killed below
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def dump_stacks(self, wait_s: float) -> str:
        """The ranks' stacks: SIGABRT makes faulthandler (PYTHONFAULTHANDLER=1) print every thread of each rank into
        ranks.log; the ranks die of it, and the caller kills the rest."""
        for pid in children_of().get(self.pid, []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGABRT)
        time.sleep(wait_s)
        return log_tail(self.log, 16000)

    def events(self, timeout: float) -> Iterator[Event]:
        deadline = time.monotonic() + timeout
        while not self.ended:
            exited = self.popen.poll() is not None  # before reading: lines written before the exit are all read
            lines = self._new_lines()
            if lines:
                yield from self._passed_on(lines)
                return
            if exited:
                if self.failure is not None:  # every rank has written its part of ranks.log by now
                    yield self.failure.model_copy(update={"traceback": log_tail(self.log, TRACEBACK_CHARS)})
                self.ended = True
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _passed_on(self, lines: list[bytes]) -> Iterator[Event]:
        for line in lines:
            event = decode(line)
            if isinstance(event, Failed):  # held back until torchrun exits (above)
                self.failure = event
            else:
                yield event

    def _new_lines(self) -> list[bytes]:
        try:
            with self.events_file.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        return [line for line in lines if line.strip()]


def log_tail(path: Path, chars: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - chars))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
