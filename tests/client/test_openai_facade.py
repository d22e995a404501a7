"""The OpenAI-compatible facade, driven by the official `openai` package, unchanged, against a live server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from service.lifecycle import JobStatus
from tests.client.live import JobDriver, LiveServer

S = JobStatus
METHOD = {
    "type": "lingudistill",
    "lingudistill": {"teacher": "s3://models/teacher", "hyperparameters": {"max_steps": 40, "kd_weight": 2.0}},
}


def client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0)


@pytest.fixture
def ai(server: LiveServer, api_key: str) -> openai.OpenAI:
    return client(server, api_key)


def upload(ai: openai.OpenAI, folder: Path, records: list[Any], name: str = "text.jsonl") -> Any:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with path.open("rb") as handle:
        return ai.files.create(file=handle, purpose="fine-tune")


def text_file(ai: openai.OpenAI, folder: Path) -> Any:
    records = [{"prompt": f"what is {i} + {i}?", "response": str(2 * i)} for i in range(5)]
    return upload(ai, folder, records)


def test_a_file_is_a_dataset_with_its_problems_by_line(ai: openai.OpenAI, tmp_path: Path) -> None:
    good = text_file(ai, tmp_path)
    assert (good.object, good.purpose, good.status, good.filename) == ("file", "fine-tune", "processed", "text.jsonl")
    assert ai.files.retrieve(good.id).bytes == good.bytes > 0
    bad = upload(ai, tmp_path, [{"prompt": "x", "response": "y"}, {"prompt": "only a prompt"}], name="bad.jsonl")
    assert bad.status == "error" and "upload:2" in bad.status_details


def test_a_job_is_created_followed_and_finished_through_the_openai_client(
    ai: openai.OpenAI, driver: JobDriver, tmp_path: Path
) -> None:
    training = text_file(ai, tmp_path)
    job = ai.fine_tuning.jobs.create(
        model="s3://models/student", training_file=training.id, method=METHOD, suffix="facade-e2e", seed=11
    )
    assert (job.object, job.status, job.model, job.training_file, job.seed) == (
        "fine_tuning.job", "queued", "s3://models/student", training.id, 11
    )  # fmt: skip
    assert job.method.lingudistill["hyperparameters"]["kd_weight"] == 2.0
    assert job.method.lingudistill["hyperparameters"]["max_steps"] == 40

    attempt = driver.start(job.id)[0]
    assert ai.fine_tuning.jobs.retrieve(job.id).status == "running"
    driver.step(job.id, attempt, step=20, total=40, loss=1.5)
    driver.event(job.id, attempt, "log", {"message": "half way"})
    driver.checkpoint(job.id, attempt, 20, f"jobs/{job.id}/attempt-{attempt}/checkpoints/20", {"model.bin": "ab"})
    driver.succeed(job.id, attempt, report=None)

    done = ai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == f"/v1/jobs/{job.id}/model"
    assert done.finished_at is not None and done.finished_at >= done.created_at
    events = list(ai.fine_tuning.jobs.list_events(job.id, limit=2))  # auto-pagination follows `after`
    assert len(events) >= 3 and all(e.object == "fine_tuning.job.event" and e.message for e in events)
    assert [int(e.id) for e in events] == sorted(int(e.id) for e in events)
    [checkpoint] = ai.fine_tuning.jobs.checkpoints.list(job.id).data
    assert (checkpoint.step_number, checkpoint.fine_tuning_job_id) == (20, job.id)


def test_extra_body_list_pages_and_cancel(ai: openai.OpenAI, tmp_path: Path) -> None:
    training = text_file(ai, tmp_path)
    created = [
        ai.fine_tuning.jobs.create(
            model="s3://models/student", training_file=training.id, suffix=f"page-{n}", extra_body={"method": METHOD}
        )
        for n in range(3)
    ]
    first = ai.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == [created[2].id, created[1].id] and first.has_more
    second = ai.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == created[0].id
    cancelled = ai.fine_tuning.jobs.cancel(created[0].id)
    assert cancelled.status == "cancelled"


def test_pause_and_resume_through_the_openai_client(ai: openai.OpenAI, driver: JobDriver, tmp_path: Path) -> None:
    training = text_file(ai, tmp_path)
    job = ai.fine_tuning.jobs.create(model="s3://models/student", training_file=training.id, method=METHOD)
    attempt = driver.start(job.id)[0]
    assert ai.fine_tuning.jobs.pause(job.id).status == "pausing"
    assert ai.fine_tuning.jobs.pause(job.id).status == "pausing"  # a repeated pause answers the job unchanged

    driver.checkpoint(job.id, attempt, 12, f"jobs/{job.id}/attempt-{attempt}/checkpoints/12", {"model.bin": "ab"})
    driver.finish_pause(job.id, attempt, stopped_at=12)
    assert ai.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert ai.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.ConflictError) as raised:
        ai.fine_tuning.jobs.resume(job.id)
    assert raised.value.code == "invalid_transition"
    messages = [e.message for e in ai.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert any("Paused at step 12" in m for m in messages), messages


def test_errors_come_in_openai_s_envelope_with_the_param(ai: openai.OpenAI, tmp_path: Path) -> None:
    training = text_file(ai, tmp_path)
    bad_method = {**METHOD, "lingudistill": {**METHOD["lingudistill"], "hyperparameters": {"n_epochs": 3}}}
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        ai.fine_tuning.jobs.create(model="s3://models/student", training_file=training.id, method=bad_method)
    assert raised.value.param == "method.lingudistill.hyperparameters.n_epochs"
    assert raised.value.type == "invalid_request_error" and "max_steps" in raised.value.message
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        ai.fine_tuning.jobs.create(model="http://127.0.0.1/x", training_file=training.id, method=METHOD)
    assert raised.value.param == "model"
    with pytest.raises(openai.NotFoundError) as raised:
        ai.fine_tuning.jobs.retrieve("job_nope")
    assert raised.value.code == "job_not_found"


def test_another_tenant_sees_nothing_and_a_bad_key_is_refused(
    server: LiveServer, ai: openai.OpenAI, new_key: Callable[[], str], tmp_path: Path
) -> None:
    training = text_file(ai, tmp_path)
    job = ai.fine_tuning.jobs.create(model="s3://models/student", training_file=training.id, method=METHOD)
    other = client(server, new_key())
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(training.id)
    assert job.id not in [j.id for j in other.fine_tuning.jobs.list().data]
    with pytest.raises(openai.AuthenticationError) as raised:
        client(server, "ld_not_a_key").fine_tuning.jobs.list()
    assert raised.value.type == "authentication_error"


def test_an_idempotency_key_replays_the_same_job(ai: openai.OpenAI, tmp_path: Path) -> None:
    training = text_file(ai, tmp_path)
    headers = {"Idempotency-Key": "ci-run-42"}
    first = ai.fine_tuning.jobs.create(
        model="s3://models/student", training_file=training.id, method=METHOD, extra_headers=headers
    )
    again = ai.fine_tuning.jobs.create(
        model="s3://models/student", training_file=training.id, method=METHOD, extra_headers=headers
    )
    assert again.id == first.id


def test_a_broken_multipart_upload_is_an_invalid_request_not_a_bare_400(server: LiveServer, api_key: str) -> None:
    """Found by Schemathesis: Starlette answers an unparsable multipart body with its own 400."""
    import httpx

    body = b"--b0undary\r\nTrue--b0undary--\r\n"
    response = httpx.post(
        f"{server.url}/openai/v1/files",
        content=body,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
