"""A job through a real worker on Postgres, Redis and S3: states, metrics, checkpoints, the final model."""

from __future__ import annotations

import json
from pathlib import Path

from service.models import FailureReason, JobStatus
from service.storage import file_sha256
from tests.worker.conftest import Stack, WorkerProcess, job_spec, pid_alive, wait_until

S = JobStatus


def test_job_runs_end_to_end_and_a_duplicate_message_starts_no_second_attempt(
    stack: Stack, shared_worker: WorkerProcess, tiny_world: Path, tmp_path: Path
) -> None:
    job_id = stack.submit(job_spec(tiny_world, stack.queue))
    stack.wait_status(job_id, {S.validating, S.running}, timeout=60)
    stack.resend(job_id)  # a redelivered duplicate while the job runs: the worker's second slot takes it

    job = stack.wait_status(job_id, {S.succeeded, S.failed}, timeout=90)

    assert job.status is S.succeeded, job.failure_message
    assert stack.statuses(job_id) == ["queued", "validating", "running", "evaluating", "succeeded"]
    assert [step for step, _ in stack.metrics(job_id)] == [1, 2, 3, 4, 5, 6]
    assert job.step == 6 and job.latest_metrics and "loss_kd" in job.latest_metrics
    checkpoints = stack.checkpoints(job_id)
    assert [c.step for c in checkpoints] == [2, 4]
    for checkpoint in checkpoints:
        assert "manifest.json" in checkpoint.manifest
        for name, sha in checkpoint.manifest.items():
            target = tmp_path / f"ckpt-{checkpoint.step}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"".join(stack.storage.iter_bytes(f"{checkpoint.storage_prefix}/{name}")))
            assert file_sha256(target) == sha
    assert _final_model_loads(stack, job_id, tmp_path / "model")
    assert not any(pid_alive(pid) for pid in stack.child_pids(job_id))
    # the duplicate started no second attempt
    wait_until(lambda: shared_worker.log.read_text().count(f"job {job_id}: ") == 2, 20, "the duplicate")
    assert "skipped" in shared_worker.log.read_text()
    assert stack.job(job_id).attempt == 1 and len(stack.child_pids(job_id)) == 1


def _final_model_loads(stack: Stack, job_id: str, target: Path) -> bool:
    from transformers import AutoModelForImageTextToText

    for key in stack.storage.list(f"jobs/{job_id}/model"):
        path = target / key.split("/model/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(stack.storage.iter_bytes(key)))
    model = AutoModelForImageTextToText.from_pretrained(target)
    return sum(p.numel() for p in model.parameters()) > 0


def test_bad_data_fails_in_validating_naming_source_and_line(
    stack: Stack, shared_worker: WorkerProcess, tiny_world: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = (tiny_world / "data" / "text.jsonl").read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1], json.dumps({"prompt": "no response"}), *lines[2:]]) + "\n")
    spec = job_spec(tiny_world, stack.queue)
    spec["mixture"][0]["uri"] = str(bad)

    job = stack.wait_status(stack.submit(spec), {S.failed, S.succeeded}, timeout=60)

    assert job.status is S.failed
    assert job.failure_reason is FailureReason.bad_input
    assert "bad.jsonl:3" in (job.failure_message or ""), job.failure_message
    assert "text" in (job.failure_message or "")
    assert stack.statuses(job.id) == ["queued", "validating", "failed"]
    assert job.attempt == 1
