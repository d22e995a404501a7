"""One attempt of one job: claim, prepare inputs, spawn the training child, supervise it, conclude.

The supervisor runs inside the Celery task and never imports torch: the child (worker.child) alone trains, so
CUDA is never initialised in the Celery process. While the child runs, the supervisor
    batches step records into the metrics table (at most once per `metrics_flush_s`),
    uploads checkpoints in a background thread (files first, manifest last) and records them complete,
    renews the lease every lease_s / 3 from a thread of its own (the lease outlives two missed heartbeats),
    reads the job row every `cancel_poll_s` for a cancel or a pause, and enforces max_runtime_s and the stall watchdog.
A pause has the child save a checkpoint at its next step boundary and stop; once that checkpoint is uploaded and
recorded the job is paused and the lease released, so the GPU is free (the attempt ends, and is given back).
The child is started by a Launcher (worker.launcher): one spawned process, or torchrun for resources.gpus > 1;
either way its typed events (lingudistill.events) arrive through the same `TrainingChild.events`.
Every write carries the attempt number (the fencing token): once another attempt owns the job, writes change
nothing and this attempt kills its child and exits. A database outage is waited out (worker.outage), so it never
ends an attempt by itself; the supervisor's pulse tells the child it is alive, and a child whose supervisor froze
ends itself (lingudistill.events). An attempt's working folder is locked while it lives: a later attempt on the
same host removes only folders whose owner is gone, and keeps a finished run whose upload failed, to upload it
instead of training again.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from lingudistill.checkpoint import checkpoint_name
from lingudistill.events import (
    CheckpointSaved,
    Done,
    Evaluating,
    Event,
    Failed,
    Notice,
    Pulse,
    Step,
    Supervision,
    TrainBegin,
    Validated,
)
from lingudistill.spec import EvalSuite, JobSpec, MixtureSource
from service.datasets.repository import get_dataset_by_id
from service.db import session_scope
from service.dispatch import Wakeup
from service.jobs import control, repository
from service.jobs.repository import ClaimedJob
from service.models import Checkpoint, Dataset, FailureReason, JobStatus
from service.storage import copy_to_file
from worker import multigpu, transfers
from worker.child import SingleProcessLauncher
from worker.launcher import Launcher, LaunchRequest, TrainingChild
from worker.outage import ride_out
from worker.runtime import Runtime
from worker.workdirs import FinishedRun, WorkdirLock, remove_abandoned_attempts

T = TypeVar("T", MixtureSource, EvalSuite)
R = TypeVar("R")

log = logging.getLogger(__name__)
S = JobStatus
NOT_METRICS = {"step"}
CANCELLED = FailureReason.cancelled


class Outcome(StrEnum):
    skipped = "skipped"  # leased by another attempt, final, or cancelled before the claim
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"  # stopped at a checkpoint on request; a resume re-queues it
    requeued = "requeued"  # an infrastructure failure with attempts left
    comparing = "comparing"  # trained and evaluated; its control arm concludes it (service.jobs.control)
    fenced_out = "fenced_out"  # this attempt lost its lease; another one owns the job


class FencedOut(Exception):
    pass


class BadInput(Exception):
    pass


def run(job_id: str, rt: Runtime) -> Outcome:
    """Claim the job (attempt += 1) and run that attempt to its end; a job that cannot be claimed is skipped."""
    with session_scope(rt.sessions) as session:
        claim = repository.claim_job(session, job_id, rt.worker_id, rt.settings.lease_s)
    if claim is None:
        return Outcome.skipped
    try:
        with multigpu.take_gpus(rt, claim.spec.resources.gpus) as gpu:  # [multi-GPU] N ids for N > 1
            outcome = Attempt(rt, claim, gpu).run()
    except multigpu.NotEnoughGpus as exc:  # [multi-GPU] raised before the attempt starts
        outcome = Attempt(rt, claim, None)._retry_or_fail(str(exc))
    settle_pair(rt, job_id)
    return outcome


def settle_pair(rt: Runtime, job_id: str) -> None:
    """After either arm of a job with a control ends, conclude the pair if the other arm is done too. Never holds
    the worker: a failure here (storage away) leaves the method comparing, and the sweeper concludes it later."""
    try:
        control.settle(rt.sessions, rt.storage, job_id)
    except Exception:
        log.exception("job %s: could not conclude the comparison with the control arm; the sweeper retries", job_id)


def launcher_for(spec: JobSpec) -> Launcher:
    return multigpu.TorchrunLauncher() if spec.resources.gpus > 1 else SingleProcessLauncher()


STEP_TIME_WEIGHT = 0.1  # of the newest step in the moving average: one slow step moves the ETA by a tenth


def smoothed_step_time(previous: float | None, latest: float | int | None) -> float | None:
    """An exponential moving average of the step time, so the ETA shown does not swing with every step (an
    evaluation or a checkpoint makes one step slow; the first steps warm up)."""
    if latest is None or latest <= 0:
        return previous
    return float(latest) if previous is None else (1 - STEP_TIME_WEIGHT) * previous + STEP_TIME_WEIGHT * latest


def metric_rows(record: dict[str, int | float]) -> list[tuple[int, str, float]]:
    step = int(record["step"])
    numeric = {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return [(step, name, float(value)) for name, value in numeric.items() if name not in NOT_METRICS]


@dataclass
class Clock:
    """When each periodic duty is next due (time.monotonic())."""

    flush: float
    state: float


class Attempt:
    def __init__(self, rt: Runtime, claim: ClaimedJob, gpu: str | None) -> None:
        self.rt, self.claim, self.gpu = rt, claim, gpu
        self.job_id, self.attempt = claim.job_id, claim.attempt
        self.status = S.validating
        self.job_dir = rt.scratch_dir / claim.job_id
        self.workdir = self.job_dir / f"attempt-{claim.attempt}"
        self.output = self.workdir / "output"
        self.supervision = Supervision(str(self.output), rt.settings.lease_s, str(self.output / "uploads"))
        self.child: TrainingChild | None = None
        self.pulse = Pulse(self.supervision.pulse_file)
        self.lock: WorkdirLock | None = None
        self.child_gone = False
        self.pending: list[tuple[int, str, float]] = []
        self.last_record: dict[str, int | float] | None = None
        self.step_time_s: float | None = None  # smoothed: the job's ETA and throughput read this
        self.done: Done | None = None
        self.error: Failed | None = None
        self.cancel_deadline: float | None = None
        self.killed_for: tuple[FailureReason, str] | None = None
        self.last_progress: float | None = None  # armed while steps are expected (training, not evaluating)
        self.last_step = 0
        self.lease_lost = threading.Event()
        self.uploader = transfers.CheckpointUploader(
            rt.storage, self.job_id, self._recorded, self._upload_failed, attempt=claim.attempt
        )

    # --- the attempt, top to bottom ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        fenced = False
        try:
            return self._run()
        except FencedOut:
            fenced = True
            return Outcome.fenced_out
        except BadInput as exc:
            return self._fail(FailureReason.bad_input, str(exc))
        except Exception as exc:  # storage, database or spawn trouble: not the user's input
            log.exception("job %s attempt %d", self.job_id, self.attempt)
            return self._retry_or_fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._kill_child()
            self.pulse.stop()
            self.uploader.close(wait=not fenced)
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> Outcome:
        remove_abandoned_attempts(self.job_dir)  # never a live one: a frozen attempt's child may still run there
        self.lock = WorkdirLock.take(self.workdir)
        self.output.mkdir(parents=True)
        self.pulse.start()
        with self._keep_lease():
            finished = FinishedRun.find(self.job_dir)
            if finished is not None:  # an earlier attempt here trained and evaluated, and only its upload failed
                return self._upload_finished(finished)
            spec = self._local_spec(self.claim.spec)
            resume = self._download_checkpoint()
            self.child = self._spawn(spec, resume)
            self._supervise(spec)
            self.child.join(10)  # the child is done with its messages; its exit code explains a death
            return self._conclude()

    @contextlib.contextmanager
    def _keep_lease(self) -> Iterator[None]:
        """Heartbeats every lease_s / 3 from a thread of their own, for the whole attempt.

        Nothing else the attempt does may delay them: a download or upload longer than the lease let a sweeper
        re-queue a healthy job (seen with three workers on two cores: the finished job was fenced out during its
        final uploads), and so did a metrics write waiting out one Postgres outage while a second began (issue 14).
        A lost lease ends the attempt at the supervisor loop's next tick."""
        self._heartbeat()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.rt.settings.lease_s / 3):
                try:
                    self._heartbeat()
                except FencedOut:
                    self.lease_lost.set()  # the supervisor loop ends the attempt (_tick)
                    return
                except Exception:  # the database may be briefly away; the next beat tries again
                    log.exception("job %s: heartbeat failed", self.job_id)

        thread = threading.Thread(target=beat, name=f"lease-{self.job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(5.0)  # one that still waits out an outage may go on alone: a late renewal changes nothing

    # --- inputs ------------------------------------------------------------------------------------------------
    def _local_spec(self, spec: JobSpec) -> JobSpec:
        """dataset://ID sources and suites become local copies of the uploaded files; other URIs the engine fetches."""
        mixture = [self._localised(s, "training", f"source {s.name}") for s in spec.mixture]
        evaluation = spec.evaluation.model_copy(
            update={
                group: [self._localised(s, "evaluation", f"{group} suite {s.name}") for s in suites]
                for group, suites in (("language", spec.evaluation.language), ("vision", spec.evaluation.vision))
            }
        )
        return spec.model_copy(update={"mixture": mixture, "evaluation": evaluation})

    def _localised(self, item: T, kind: str, what: str) -> T:
        """`item` (a mixture source or an eval suite) with a dataset:// URI replaced by a local copy."""
        if not item.uri.startswith("dataset://"):
            return item
        dataset_id = item.uri.removeprefix("dataset://")

        def read() -> Dataset | None:
            with session_scope(self.rt.sessions) as session:
                return get_dataset_by_id(session, dataset_id)

        dataset = self._db("dataset", read)
        if dataset is None or dataset.tenant_id != self.claim.tenant_id or dataset.status != "ready":
            raise BadInput(f"{what}: dataset {dataset_id} does not exist or is not ready")
        if dataset.kind != kind:
            raise BadInput(f"{what}: dataset {dataset_id} was uploaded as {dataset.kind} data, not {kind} data")
        target = self.workdir / "datasets" / f"{dataset_id}{Path(dataset.storage_key).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_to_file(self.rt.storage, dataset.storage_key, target)
        return item.model_copy(update={"uri": str(target)})

    def _download_checkpoint(self) -> bool:
        """The newest complete checkpoint whose files verify, into the child's output folder (resume)."""

        def read() -> list[Checkpoint]:
            with session_scope(self.rt.sessions) as session:
                return repository.list_complete_checkpoints(session, self.job_id)

        checkpoints = self._db("checkpoints", read)
        for checkpoint in reversed(checkpoints):
            folder = self.output / "checkpoints" / checkpoint_name(checkpoint.step)
            try:
                transfers.download_checkpoint(self.rt.storage, checkpoint.storage_prefix, checkpoint.manifest, folder)
            except transfers.TransferError as exc:
                self._event("checkpoint_rejected", {"step": checkpoint.step, "error": str(exc)})
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self._event("resuming", {"step": checkpoint.step})
            return True
        return False

    # --- the child -------------------------------------------------------------------------------------------
    def _spawn(self, spec: JobSpec, resume: bool) -> TrainingChild:
        request = LaunchRequest(spec, self.claim.spec, self.workdir, self.supervision, resume, self.gpu)
        started = launcher_for(spec).launch(request)
        data = {"pid": started.pid, "worker": self.rt.worker_id, "resume": resume}
        ranks = {"ranks": spec.resources.gpus, "gpus": self.gpu} if spec.resources.gpus > 1 else {}
        self._event("child_started", {**data, **ranks})
        return started

    def _kill_child(self) -> None:
        if self.child is None:
            return
        self.child.kill()
        self.child.join(10)

    def _supervise(self, spec: JobSpec) -> None:
        now = time.monotonic()
        clock = Clock(now + self.rt.worker.metrics_flush_s, now)
        limit = spec.resources.max_runtime_s
        deadline = now + limit if limit else None
        while not self.child_gone:
            self._receive(0.2)
            self._tick(time.monotonic(), clock, deadline)
        self._flush_metrics()

    def _receive(self, timeout: float) -> None:
        assert self.child is not None
        for event in self.child.events(timeout):  # one handling for both kinds of child
            self._handle(event)
        self.child_gone = self.child.ended

    def _handle(self, event: Event) -> None:
        match event:
            case Step(record=record):
                self._on_step(record)
            case CheckpointSaved(step=step, folder=folder):
                self._flush_metrics()  # steps up to the checkpoint are stored before it can be resumed from
                self.uploader.submit(step, Path(folder))
            case Validated():
                self._move(S.running)
            case TrainBegin(step=step, total=total):
                self.last_progress, self.last_step = time.monotonic(), step
                self._event("training", {"from_step": step, "total_steps": total})
            case Evaluating():
                self._flush_metrics()
                self.last_progress = None
                self._move(S.evaluating)
            case Notice(level=level, message=message, data=data):
                self._event("notice", {"level": level, "message": message, **data})
            case Done():
                self.done = event
            case Failed():
                self.error = event

    def _on_step(self, record: dict[str, int | float]) -> None:
        scores = {name.removeprefix("eval/"): value for name, value in record.items() if name.startswith("eval/")}
        if scores:  # the engine's periodic evaluation (evaluation.every): an event besides the eval/ metrics
            self._event("evaluation", {"step": record["step"], "scores": scores})
        self.pending += metric_rows(record)
        self.last_record = record
        self.step_time_s = smoothed_step_time(self.step_time_s, record.get("step_time_s"))
        self.last_step = int(record["step"])
        if self.last_progress is not None:
            self.last_progress = time.monotonic()

    # --- periodic duties -------------------------------------------------------------------------------------
    def _tick(self, now: float, clock: Clock, deadline: float | None) -> None:
        if self.lease_lost.is_set():
            raise FencedOut
        if now >= clock.flush:
            self._flush_metrics()
            clock.flush = now + self.rt.worker.metrics_flush_s
        if now >= clock.state:
            self._check_state()
            clock.state = now + self.rt.worker.cancel_poll_s
        if self.cancel_deadline is not None and now >= self.cancel_deadline:
            self._kill_child()  # the cooperative stop did not come in time
        if deadline is not None and now >= deadline and self.killed_for is None:
            limit = self.claim.spec.resources.max_runtime_s
            self._kill_for(FailureReason.timeout, f"the attempt exceeded max_runtime_s ({limit} s)")
        if self.last_progress is not None and now - self.last_progress > self.rt.worker.stall_timeout_s:
            self._stalled(now - self.last_progress)

    def _db(self, what: str, write: Callable[[], R]) -> R:
        """A database call of this attempt, waited through an outage of up to db_outage_limit_s (worker.outage)."""
        return ride_out(write, self.rt.worker.db_outage_limit_s, f"job {self.job_id} attempt {self.attempt}: {what}")

    def _flush_metrics(self) -> None:
        rows, record = self.pending, self.last_record
        if not rows or record is None:
            return

        def write() -> int:
            with session_scope(self.rt.sessions) as session:
                written = repository.record_metrics(session, self.job_id, self.attempt, rows)
                if written:
                    repository.update_progress(
                        session, self.job_id, self.attempt, step=int(record["step"]),
                        tokens_per_s=record.get("tokens_per_s"), step_time_s=self.step_time_s,
                        latest_metrics=transfers.jsonable(record),
                    )  # fmt: skip
                return written

        if self._db("metrics", write) == 0:
            raise FencedOut
        self.pending = []  # only once stored: rows of a write the outage interrupted are written again

    def _heartbeat(self) -> None:
        def renew() -> bool:
            with session_scope(self.rt.sessions) as session:
                lease_s = self.rt.settings.lease_s
                return repository.renew_lease(session, self.job_id, self.attempt, self.rt.worker_id, lease_s)

        if not self._db("heartbeat", renew):
            raise FencedOut

    def _check_state(self) -> None:
        """Fenced out if another attempt owns the job; start the cancel or the pause if one was requested."""

        def read() -> repository.JobState | None:
            with self.rt.sessions() as session:
                return repository.get_job_state(session, self.job_id)

        state = self._db("state", read)
        if state is None or state.attempt != self.attempt or state.status.is_final:
            raise FencedOut
        if state.status is S.pausing and self.status is not S.pausing:
            self.status = S.pausing
            self.supervision.pause_file.touch()  # the child saves a checkpoint at its next step boundary and stops
        if state.status is S.cancelling and self.cancel_deadline is None:
            self.status = S.cancelling
            self.supervision.stop_file.touch()  # cooperative: the child stops at its next step boundary
            self.cancel_deadline = time.monotonic() + self.rt.worker.cancel_grace_s
            self._event("stopping", {"grace_s": self.rt.worker.cancel_grace_s})

    def _kill_for(self, reason: FailureReason, message: str) -> None:
        self.killed_for = (reason, message)
        self._kill_child()

    def _stalled(self, seconds: float) -> None:
        """Dump the child's stacks into the events, kill it, and let the attempt be retried."""
        stack = self._dump_stacks()
        message = f"the training child stalled: no step for {seconds:.0f} s after step {self.last_step}"
        self._event("stalled", {"seconds": round(seconds, 1), "step": self.last_step, "stack": stack})
        self.last_progress = None
        self._kill_for(FailureReason.infrastructure, message)

    def _dump_stacks(self) -> str:
        return self.child.dump_stacks(self.rt.worker.stack_dump_wait_s) if self.child is not None else ""

    # --- the end ---------------------------------------------------------------------------------------------
    def _conclude(self) -> Outcome:
        if self.status is S.cancelling:
            return self._finish(S.cancelled, failure_reason=FailureReason.cancelled)
        if self.killed_for is not None:
            return self._failed(*self.killed_for)
        if self.error is not None:
            return self._child_failed(self.error)
        if self.status is S.pausing and self.done is not None and self.done.stopped_early:
            return self._pause(self.done)
        if self.done is not None and not self.done.stopped_early:
            return self._succeed(self.done)
        exitcode = self.child.exitcode if self.child is not None else None
        return self._retry_or_fail(f"the training child died ({_exit_description(exitcode)})")

    def _child_failed(self, error: Failed) -> Outcome:
        self._event("child_error", {"error": error.error, "traceback": error.traceback})
        return self._failed(FailureReason(error.kind.value), f"{error.error}: {error.message}")

    def _failed(self, reason: FailureReason, message: str) -> Outcome:
        """Only infrastructure failures are retried automatically."""
        return self._retry_or_fail(message) if reason is FailureReason.infrastructure else self._fail(reason, message)

    def _succeed(self, done: Done) -> Outcome:
        self.uploader.close(wait=True)
        try:
            self._upload_results(self.output)
        except Exception:
            # Keep the finished run for the next attempt on this host: it uploads instead of training again.
            FinishedRun.keep(self.output, self.job_dir, done)
            raise
        return self._succeeded(done)

    def _upload_finished(self, finished: FinishedRun) -> Outcome:
        """The next attempt after a failed final upload: upload the kept run, train nothing."""
        self._event("reuploading", {"steps": finished.done.steps, "from": str(finished.folder)})
        self._move(S.running)
        self._upload_results(finished.folder)
        outcome = self._succeeded(finished.done)
        if outcome is Outcome.succeeded:
            finished.discard()
        return outcome

    def _upload_results(self, folder: Path) -> None:
        def retried(tries: int, exc: Exception) -> None:
            self._event("upload_retry", {"try": tries, "error": f"{type(exc).__name__}: {exc}"})

        limit_s = self.rt.worker.final_upload_retry_s
        counts = transfers.upload_results_retrying(self.rt.storage, self.job_id, folder, limit_s, retried)
        self._event("uploaded", counts)

    def _succeeded(self, done: Done) -> Outcome:
        if self.status in (S.running, S.pausing):  # pausing: training ended before the pause landed
            self._move(S.evaluating)
        if self.claim.control_job_id is not None:  # not succeeded before the lift over the control exists
            return self._finish(S.comparing, step=done.steps)
        return self._finish(S.succeeded, report=done.report, step=done.steps)

    def _fail(self, reason: FailureReason, message: str) -> Outcome:
        return self._finish(S.failed, failure_reason=reason, failure_message=message[:4000])

    def _finish(self, target: JobStatus, **fields: Any) -> Outcome:
        """Move to a final status (or comparing); a cancel that arrived meanwhile wins over success or failure."""

        def write() -> Outcome:
            with session_scope(self.rt.sessions) as session:
                if repository.transition(session, self.job_id, self.attempt, target, **fields):
                    return Outcome(target.value)
                return self._cancelled_instead(session)

        return self._db(f"finish as {target.value}", write)

    def _cancelled_instead(self, session: Session) -> Outcome:
        """The attempt's own end was refused: a cancel that arrived meanwhile wins; else another attempt owns it."""
        state = repository.get_job_state(session, self.job_id)
        if state is None or state.attempt != self.attempt or state.status is not S.cancelling:
            return Outcome.fenced_out
        repository.transition(session, self.job_id, self.attempt, S.cancelled, failure_reason=CANCELLED)
        return Outcome.cancelled

    def _pause(self, done: Done) -> Outcome:
        """The child stopped at step done.steps for a pause: once its checkpoint there is recorded, paused (the lease
        released); failed when that checkpoint could not be written."""
        self.uploader.close(wait=True)

        def write() -> Outcome:
            with session_scope(self.rt.sessions) as session:
                paused = repository.finish_pause(session, self.job_id, self.attempt, done.steps)
                return Outcome(paused.status.value) if paused else self._cancelled_instead(session)

        return self._db("pause", write)

    def _retry_or_fail(self, message: str) -> Outcome:
        """Infrastructure failures are retried (resuming from the last complete checkpoint) up to max_attempts."""
        self.uploader.close(wait=True)  # checkpoints already written still count for the resume

        def write() -> tuple[JobStatus | None, repository.QueuedJob | None]:
            with session_scope(self.rt.sessions) as session:
                status = repository.requeue_failed_attempt(session, self.job_id, self.attempt, message[:4000])
                return status, repository.get_wakeup(session, self.job_id) if status is S.queued else None

        status, wakeup = self._db("requeue", write)
        if status is None:
            return Outcome.fenced_out
        if wakeup is not None:
            send_wakeups(self.rt, [wakeup])
            return Outcome.requeued
        return Outcome(status.value)

    # --- small writes ----------------------------------------------------------------------------------------
    def _move(self, target: JobStatus) -> None:
        def write() -> bool:
            with session_scope(self.rt.sessions) as session:
                return repository.transition(session, self.job_id, self.attempt, target)

        if self._db(f"move to {target.value}", write):
            self.status = target
        else:
            self._check_state()

    def _event(self, type: str, data: dict[str, Any]) -> None:
        """Logged only while this attempt owns the job (append_event checks the fencing token)."""

        def write() -> int | None:
            with session_scope(self.rt.sessions) as session:
                return repository.append_event(session, self.job_id, self.attempt, type, data)

        self._db(f"event {type}", write)

    def _recorded(self, uploaded: transfers.UploadedCheckpoint) -> None:
        def write() -> bool:
            with session_scope(self.rt.sessions) as session:
                return repository.record_checkpoint(
                    session, self.job_id, self.attempt, step=uploaded.step, storage_prefix=uploaded.prefix,
                    manifest=uploaded.manifest, size_bytes=uploaded.size_bytes,
                )  # fmt: skip

        self._db("checkpoint", write)

    def _upload_failed(self, step: int, exc: BaseException) -> None:
        self._event("checkpoint_upload_failed", {"step": step, "error": f"{type(exc).__name__}: {exc}"})


def send_wakeups(rt: Runtime, jobs: list[repository.QueuedJob]) -> None:
    for job in jobs:
        try:
            rt.dispatcher.send(Wakeup(job.job_id, job.queue, job.priority))
        except Exception:  # committed as queued: the sweeper re-sends it
            log.exception("could not send job %s to the broker; the sweeper will retry", job.job_id)


def _exit_description(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
