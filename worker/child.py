"""The training child: a spawned process (never forked) that runs `lingudistill.pipeline.run_job`.

It talks to its supervisor through a one-way pipe of small dicts, in order:
    started {pid} -> validated -> train_begin {step, total} -> step {record}... and checkpoint {step, folder}
    -> evaluating -> done {steps, stopped_early, model_dir, report}      or at any point: error {kind, message}
It leads its own process group (so a cancel can SIGKILL the group), dies with its parent (PR_SET_PDEATHSIG),
and writes every thread's stack to `stack_file` on SIGUSR1 (the stall watchdog's diagnosis).
Only this process imports torch and may initialise CUDA.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildConfig:
    spec_json: str  # the resolved JobSpec, local URIs already in place
    origin_json: str  # the spec as submitted (dataset:// URIs), recorded in the report's provenance
    output_dir: str
    resume: bool
    stack_file: str
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this job; None leaves it as inherited


def main(conn: Connection, stop: Any, config: ChildConfig) -> None:
    """The child's entry point (multiprocessing target). Exit code 0 after `done`, 1 after `error`."""
    _detach(config)
    try:
        conn.send({"type": "started", "pid": os.getpid()})
        _run(conn, stop, config)
    except BaseException as exc:
        conn.send(error_message(exc))
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


def _run(conn: Connection, stop: Any, config: ChildConfig) -> None:
    from lingudistill.pipeline import run_job, validate
    from lingudistill.spec import JobSpec

    spec = JobSpec.model_validate_json(config.spec_json)
    checked = validate(spec)  # the `validating` stage: models, tokenizer compatibility, every record of the data
    conn.send({"type": "validated"})
    if stop.is_set():
        conn.send({"type": "done", "steps": 0, "stopped_early": True, "model_dir": None, "report": None})
        return
    relay = Relay(conn, stop, Path(config.output_dir), spec.training.max_steps)
    origin = JobSpec.model_validate_json(config.origin_json)
    result = run_job(
        spec, Path(config.output_dir), resume=config.resume, callbacks=[relay], validation=checked, origin=origin
    )
    conn.send(
        {
            "type": "done",
            "steps": result.train.steps,
            "stopped_early": result.train.stopped_early,
            "model_dir": str(result.train.model_dir),
            "report": result.report,
        }
    )


class Relay:
    """A TrainingCallback (duck-typed, so this module imports no torch at load) that forwards to the pipe."""

    def __init__(self, conn: Connection, stop: Any, output_dir: Path, total: int) -> None:
        self.conn, self.stop, self.total = conn, stop, total
        self.uploads = output_dir / "uploads"

    def on_train_begin(self, recipe: Any) -> None:
        self.conn.send({"type": "train_begin", "step": recipe.step, "total": self.total})

    def on_step(self, record: dict[str, Any]) -> None:
        self.conn.send({"type": "step", "record": record})

    def on_train_end(self, result: Any) -> None:
        if not result.stopped_early:
            self.conn.send({"type": "evaluating"})

    def on_checkpoint(self, step: int, folder: Path, manifest: dict[str, Any]) -> None:
        # Hard links keep the files for the upload even after the engine prunes the folder; costs no copy.
        staged = link_tree(folder, self.uploads / folder.name)
        self.conn.send({"type": "checkpoint", "step": step, "folder": str(staged)})

    def should_stop(self) -> bool:
        return self.stop.is_set()


def link_tree(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:  # another filesystem: copy instead
            shutil.copy2(path, destination)
    return target


def bad_input_classes() -> tuple[type[BaseException], ...]:
    """The engine's exceptions that mean the user's input is at fault. (Split out of classify for
    worker.multigpu, which classifies torchrun ranks' errors by class name; a test keeps the two equal.)"""
    from pydantic import ValidationError

    from lingudistill.data.records import DataError
    from lingudistill.models.compat import IncompatibleModels
    from lingudistill.models.families import UnsupportedModel
    from lingudistill.models.loading import ModelLoadError
    from lingudistill.spec import SpecError

    return (DataError, ModelLoadError, IncompatibleModels, UnsupportedModel, SpecError, ValidationError)


def classify(exc: BaseException) -> str:
    """The failure reason of an exception raised by the engine (a FailureReason value)."""
    if isinstance(exc, (*bad_input_classes(), FileNotFoundError)):
        return "bad_input"
    if isinstance(exc, MemoryError) or _is_cuda_oom(exc):
        return "out_of_memory"
    return "infrastructure"


def _is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def error_message(exc: BaseException) -> dict[str, Any]:
    try:
        kind = classify(exc)
    except Exception:  # the engine itself did not import: nothing the user gave us is at fault
        kind = "infrastructure"
    return {
        "type": "error",
        "kind": kind,
        "error": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }
