"""Multi-GPU jobs (resources.gpus: 2) through a real worker, on CPU: torchrun with 2 gloo ranks.

The worker runs with LINGUDISTILL_WORKER_ALLOW_CPU_RANKS=true, so its GPU check lets the ranks run on CPU
(LINGUDISTILL_DEVICE=cpu). Events come from rank 0's events.jsonl instead of the pipe; the tests check that they
drive the job exactly as the pipe does: states, metrics once per step, checkpoints, resume, cancel.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lingudistill.errors import FailureKind
from lingudistill.events import CheckpointSaved, Event, Failed, Step, Validated
from service.models import FailureReason, JobStatus
from tests.worker.conftest import Stack, WorkerProcess, job_spec, wait_until
from worker import multigpu

S = JobStatus
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")


def two_rank_spec(world: Path, queue: str, **training: Any) -> dict[str, Any]:
    spec = job_spec(world, queue, **training)
    spec["resources"]["gpus"] = 2
    return spec


def job_processes(job_id: str) -> list[int]:
    """Every live process working for the job: torchrun and its ranks name the job's folder on their command line."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if job_id.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def cpu_ranks_worker(stack: Stack) -> tuple[WorkerProcess, str]:
    queue = f"{stack.queue}-mgpu"
    worker = stack.worker(queue=queue, LINGUDISTILL_WORKER_ALLOW_CPU_RANKS="true")
    return worker, queue


FAKE_RANK0 = """
import json, sys, time
events = open(sys.argv[1], "a")
events.write(json.dumps({"type": "validated"}) + "\\n" + '{"type": "st'); events.flush(); time.sleep(0.5)
events.write('ep", "record": {"step": 1, "loss": 2.0}}\\n'); events.flush()
checkpoint = {"type": "checkpoint", "step": 2, "folder": sys.argv[2]}
events.write(json.dumps(checkpoint) + "\\n")
failed = {"type": "error", "kind": "bad_input", "error": "DataError", "message": "bad line"}
events.write(json.dumps(failed) + "\\n"); events.flush()
time.sleep(0.3); print("Traceback: rank 1 too"); sys.exit(1)
"""


# --- the contract with the engine, without a worker -----------------------------------------------------------------
def test_one_classifier_decides_whose_fault_and_the_worker_imports_no_torch() -> None:
    import subprocess
    import sys

    import lingudistill.pipeline  # noqa: F401 - defines (through its imports) every engine error class
    from lingudistill.errors import FailureKind, UserInputError, classify

    probe = "import sys, worker.multigpu, worker.supervisor; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"

    def subclasses(cls: type) -> set[type]:
        return {cls}.union(*(subclasses(sub) for sub in cls.__subclasses__()))

    user_errors = {cls.__name__ for cls in subclasses(UserInputError)}
    assert {"SpecError", "DataError", "ModelLoadError", "IncompatibleModels", "UnsupportedModel"} <= user_errors
    assert "HarnessUnavailable" in user_errors
    from lingudistill.data.records import DataError

    assert classify(DataError("bad line")) is FailureKind.bad_input
    assert classify(FileNotFoundError("data/missing.jsonl")) is FailureKind.bad_input
    assert classify(torch.OutOfMemoryError("CUDA out of memory")) is FailureKind.out_of_memory
    assert classify(MemoryError()) is FailureKind.out_of_memory
    assert classify(RuntimeError("NCCL timeout")) is FailureKind.infrastructure


def test_gpus_are_taken_n_at_a_time_from_the_workers_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from worker.runtime import GpuSlots

    monkeypatch.setenv("LINGUDISTILL_WORKER_ALLOW_CPU_RANKS", "false")
    multigpu.get_multigpu_settings.cache_clear()
    rt: Any = SimpleNamespace(gpus=GpuSlots("0,1,2"))
    with multigpu.take_gpus(rt, 2) as gpus:
        assert gpus == "0,1" and rt.gpus.free == ["2"]
        with pytest.raises(multigpu.NotEnoughGpus, match="needs 2 GPUs; 1 of"), multigpu.take_gpus(rt, 2):
            pass
        with multigpu.take_gpus(rt, 1) as one:
            assert one == "2"
    assert sorted(rt.gpus.free) == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(multigpu.NotEnoughGpus), multigpu.take_gpus(SimpleNamespace(gpus=GpuSlots(None)), 2):  # type: ignore[arg-type]
        pass
    monkeypatch.setenv("LINGUDISTILL_WORKER_ALLOW_CPU_RANKS", "true")
    multigpu.get_multigpu_settings.cache_clear()
    with multigpu.take_gpus(SimpleNamespace(gpus=GpuSlots(None)), 2) as cpu:  # type: ignore[arg-type]
        assert cpu == ""  # CPU ranks
    multigpu.get_multigpu_settings.cache_clear()


def test_the_events_file_is_tailed_into_typed_events(tmp_path: Path) -> None:
    """Partial lines wait for their end; an error waits for torchrun's exit, with every rank's output."""
    output = tmp_path / "out"
    output.mkdir()
    argv = [sys.executable, "-c", FAKE_RANK0, str(output / "events.jsonl"), str(tmp_path / "staged")]
    launched = multigpu.TorchrunChild(argv, dict(os.environ), tmp_path / "ranks.log", output / "events.jsonl")
    events: list[Event] = []
    deadline = time.monotonic() + 20
    while not launched.ended and time.monotonic() < deadline:
        events += list(launched.events(0.2))

    assert launched.ended and launched.exitcode == 1
    assert [type(e) for e in events] == [Validated, Step, CheckpointSaved, Failed]
    assert events[1] == Step(record={"step": 1, "loss": 2.0})
    assert events[2] == CheckpointSaved(step=2, folder=str(tmp_path / "staged"))
    failed = events[3]
    assert isinstance(failed, Failed) and failed.kind is FailureKind.bad_input and "rank 1 too" in failed.traceback


# --- through a real worker ------------------------------------------------------------------------------------------
def test_a_two_rank_job_runs_end_to_end(
    stack: Stack, cpu_ranks_worker: tuple[WorkerProcess, str], tiny_world: Path, tmp_path: Path
) -> None:
    _, queue = cpu_ranks_worker
    job_id = stack.submit(two_rank_spec(tiny_world, queue, max_steps=4, checkpoint_every=2))

    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=150)

    assert job.status is S.succeeded, job.failure_message
    assert stack.statuses(job_id) == ["queued", "validating", "running", "evaluating", "succeeded"]
    started = stack.events(job_id, "child_started")
    assert len(started) == 1 and started[0].data["ranks"] == 2 and started[0].data["gpus"] == ""
    # metrics once per step: rank 0 alone reports, and the metrics file it wrote has each step once
    assert [step for step, _ in stack.metrics(job_id)] == [1, 2, 3, 4]
    assert job.attempt == 1 and job.step == 4
    uploaded = b"".join(stack.storage.iter_bytes(f"jobs/{job_id}/artifacts/metrics.jsonl")).decode()
    assert [json.loads(line)["step"] for line in uploaded.splitlines()] == [1, 2, 3, 4]
    checkpoints = stack.checkpoints(job_id)
    assert [c.step for c in checkpoints] == [2]  # step 4 is the last: the model, not a checkpoint, is kept
    assert any(name.startswith("dcp/") for name in checkpoints[0].manifest)  # sharded state, uploaded
    assert list(stack.storage.list(f"jobs/{job_id}/model"))
    assert job_processes(job_id) == []


def test_a_killed_rank_is_retried_and_resumes_with_resume(
    stack: Stack, cpu_ranks_worker: tuple[WorkerProcess, str], tiny_world: Path
) -> None:
    _, queue = cpu_ranks_worker
    job_id = stack.submit(two_rank_spec(tiny_world, queue, max_steps=24, checkpoint_every=4))
    wait_until(lambda: stack.checkpoints(job_id), 150, "a complete checkpoint")
    torchrun = stack.child_pids(job_id)[0]
    ranks = multigpu.children_of().get(torchrun, [])
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)  # one rank dies: torchrun stops the other and exits non-zero

    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=150)

    assert job.status is S.succeeded, job.failure_message
    assert job.attempt == 2
    # rank 0 either reports the broken collective (RuntimeError) or is stopped by torchrun first (exit code 1)
    failed = stack.events(job_id, "attempt_failed")
    assert len(failed) == 1 and failed[0].data["reason"] == "infrastructure"
    resumed = stack.events(job_id, "resuming")
    assert len(resumed) == 1 and resumed[0].data["step"] >= 4
    assert [e.data["resume"] for e in stack.events(job_id, "child_started")] == [False, True]
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, 25))
    assert job_processes(job_id) == []


def test_kill_9_of_the_worker_takes_the_ranks_along_and_the_job_resumes_elsewhere(
    stack: Stack, tiny_world: Path, private_queue: str
) -> None:
    worker = stack.worker(queue=private_queue, LINGUDISTILL_WORKER_ALLOW_CPU_RANKS="true")
    job_id = stack.submit(two_rank_spec(tiny_world, private_queue, max_steps=24, checkpoint_every=4))
    wait_until(lambda: stack.checkpoints(job_id), 150, "a complete checkpoint")
    assert len(job_processes(job_id)) == 3

    worker.kill9()  # torchrun gets SIGTERM (PR_SET_PDEATHSIG) and stops its ranks
    wait_until(lambda: job_processes(job_id) == [], 15, "torchrun and its ranks to die with their worker")
    stack.worker(queue=private_queue, LINGUDISTILL_WORKER_ALLOW_CPU_RANKS="true")

    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=150)
    assert job.status is S.succeeded, job.failure_message
    assert job.attempt == 2 and stack.events(job_id, "resuming")[0].data["step"] >= 4
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, 25))


def test_cancel_of_a_running_two_rank_job_leaves_no_process(
    stack: Stack, cpu_ranks_worker: tuple[WorkerProcess, str], tiny_world: Path
) -> None:
    _, queue = cpu_ranks_worker
    job_id = stack.submit(two_rank_spec(tiny_world, queue, max_steps=5000, checkpoint_every=2000))
    stack.wait_status(job_id, {S.running}, timeout=150)
    wait_until(lambda: stack.job(job_id).step, 60, "the first steps")
    assert len(job_processes(job_id)) == 3  # torchrun and 2 ranks

    started = time.monotonic()
    stack.cancel(job_id)
    job = stack.wait_status(job_id, {S.cancelled, S.failed, S.succeeded}, timeout=15)

    assert time.monotonic() - started < 15
    assert job.status is S.cancelled and job.failure_reason is FailureReason.cancelled
    assert stack.events(job_id, "stopping")
    wait_until(lambda: job_processes(job_id) == [], 5, "every rank and torchrun to be gone")


def test_a_paused_two_rank_job_saves_a_sharded_checkpoint_frees_every_rank_and_resumes(
    stack: Stack, cpu_ranks_worker: tuple[WorkerProcess, str], tiny_world: Path
) -> None:
    _, queue = cpu_ranks_worker
    job_id = stack.submit(two_rank_spec(tiny_world, queue, max_steps=600, checkpoint_every=10_000))
    wait_until(lambda: (stack.job(job_id).step or 0) > 2, 150, "the first steps")

    assert stack.pause(job_id).status is S.pausing
    job = stack.wait_status(job_id, {S.paused, S.failed, S.succeeded}, timeout=60)
    assert job.status is S.paused, job.failure_message
    [checkpoint] = stack.checkpoints(job_id)  # the pause's, at the step the ranks stopped at
    assert checkpoint.step == job.resume_checkpoint_step > 2
    assert any(name.startswith("dcp/") for name in checkpoint.manifest)  # every rank's shard
    wait_until(lambda: job_processes(job_id) == [], 5, "every rank and torchrun to be gone")

    stack.resume(job_id)
    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=150)
    assert job.status is S.succeeded, job.failure_message
    assert stack.events(job_id, "resuming")[0].data["step"] == checkpoint.step
    assert [step for step, _ in stack.metrics(job_id)] == list(range(1, 601))
