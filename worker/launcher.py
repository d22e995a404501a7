"""How the supervisor starts a training child and hears from it, whatever kind of child it is.

Two launchers: one spawned process (worker.child, `resources.gpus: 1`) and torchrun over N ranks (worker.multigpu).
Both give a `TrainingChild`: its typed events (lingudistill.events), its process, and a way to kill it all. Both
children read the same `Supervision` files: STOP for a cooperative stop, and the supervisor's pulse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lingudistill.events import Event, Supervision
from lingudistill.spec import JobSpec


@dataclass(frozen=True)
class LaunchRequest:
    spec: JobSpec  # resolved, local URIs in place
    origin: JobSpec  # as submitted (dataset:// URIs), for the report's provenance
    workdir: Path  # the attempt's folder: logs, stacks and the specs the child reads
    supervision: Supervision
    resume: bool
    gpus: str | None  # CUDA_VISIBLE_DEVICES for the child; "" means CPU ranks; None leaves it as inherited


class TrainingChild(Protocol):
    @property
    def pid(self) -> int:
        """The leader of the child's process group."""
        ...

    @property
    def exitcode(self) -> int | None: ...

    @property
    def ended(self) -> bool:
        """Every event is read and the child will send no more."""
        ...

    def events(self, timeout: float) -> Iterator[Event]:
        """The events that arrive within `timeout` seconds (returns at the first quiet moment after one)."""
        ...

    def join(self, timeout: float) -> None: ...

    def kill(self) -> None:
        """SIGKILL the child and every process it started."""
        ...

    def dump_stacks(self, wait_s: float) -> str:
        """Every thread's stack (the stall watchdog's diagnosis)."""
        ...


class Launcher(Protocol):
    def launch(self, request: LaunchRequest) -> TrainingChild: ...
