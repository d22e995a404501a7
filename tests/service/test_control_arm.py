"""A job with `evaluation.control: true`: submitted as a linked pair, isolated, replayed, cancelled and retried as a
pair, and concluded (service.jobs.control) once both arms are final. On Postgres and on SQLite.

The arms' runs are played here by writing their run files to storage and moving their rows; the real workers run
them in tests/worker/test_control_arm.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from lingudistill.evaluation.compare import control_differences
from lingudistill.spec import JobSpec
from service.jobs import control as control_arm
from service.jobs import repository
from service.lifecycle import JobStatus
from service.models import Job
from service.storage_layout import artifact_key
from tests.evaluation.test_compare import arm, finished_run

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
S = JobStatus


@pytest.fixture
def control_body(spec_body):
    def make(name: str = "repair", **gates: float) -> dict[str, Any]:
        evaluation = {
            "language": [{"name": "arc", "uri": "s3://eval/arc.jsonl"}],
            "vision": [{"name": "vqa", "uri": "s3://eval/vqa.jsonl"}],
            "gates": gates,
            "control": True,
        }
        return spec_body(name, evaluation=evaluation, resources={"queue": "ctl"})

    return make


def set_status(sessions, job_id: str, status: JobStatus, **fields: Any) -> None:
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, **fields))
        session.commit()


def test_a_job_with_a_control_is_submitted_as_a_linked_pair(client, control_body, dispatcher):
    body = control_body()
    assert "seed" not in body["training"]
    method = client.post("/v1/jobs", json=body).json()
    control = client.get(f"/v1/jobs/{method['control_job_id']}").json()

    assert method["control_of"] is None and control["control_of"] == method["id"]
    assert control["control_job_id"] is None and control["name"] == "repair-control"
    assert control["spec"]["method"]["kd_sources"] == "none" and control["spec"]["evaluation"]["control"] is False
    # the generated seed is the pair's: the same data order in both arms
    assert control["spec"]["training"]["seed"] == method["spec"]["training"]["seed"]
    method_spec, control_spec = JobSpec.model_validate(method["spec"]), JobSpec.model_validate(control["spec"])
    assert control_differences(method_spec, control_spec) == []
    assert {w.job_id for w in dispatcher.sent} == {method["id"], control["id"]}  # two ordinary queued jobs
    events = client.get(f"/v1/jobs/{control['id']}/events").json()["items"]
    assert events[0]["data"]["control_of"] == method["id"]


def test_a_control_needs_something_to_compare(client, control_body):
    body = control_body()
    body["evaluation"]["language"] = []
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and "language suite" in response.text
    body = control_body()
    body["method"] = {"kd_sources": "none"}
    assert client.post("/v1/jobs", json=body).status_code == 422


def test_another_tenant_sees_neither_arm(client, make_client, new_key, control_body):
    method = client.post("/v1/jobs", json=control_body()).json()
    intruder = make_client(new_key("intruder"))
    for job_id in (method["id"], method["control_job_id"]):
        assert intruder.get(f"/v1/jobs/{job_id}").status_code == 404
        assert intruder.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert intruder.get(f"/v1/jobs/{job_id}/report").status_code == 404
    assert intruder.get("/v1/jobs").json()["items"] == []


def test_an_idempotent_replay_answers_the_same_pair(client, control_body, sessions):
    headers = {"Idempotency-Key": "pair-1"}
    first = client.post("/v1/jobs", json=control_body(), headers=headers)
    again = client.post("/v1/jobs", json=control_body(), headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["control_job_id"] == first.json()["control_job_id"]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.name.like("repair%"))) == 2


def test_cancelling_the_job_cancels_its_control(client, control_body, sessions):
    queued = client.post("/v1/jobs", json=control_body("q")).json()
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{queued['control_job_id']}").json()["status"] == "cancelled"

    running = client.post("/v1/jobs", json=control_body("r")).json()
    set_status(sessions, running["control_job_id"], S.running, attempt=1)
    assert client.post(f"/v1/jobs/{running['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{running['control_job_id']}").json()["status"] == "cancelling"

    comparing = client.post("/v1/jobs", json=control_body("c")).json()
    set_status(sessions, comparing["id"], S.comparing, attempt=1)  # waits for its control, holds no worker
    assert client.post(f"/v1/jobs/{comparing['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{comparing['control_job_id']}").json()["status"] == "cancelled"


def test_a_cancelled_control_fails_its_waiting_job_and_a_retry_runs_both_arms(client, control_body, sessions):
    method = client.post("/v1/jobs", json=control_body()).json()
    set_status(sessions, method["id"], S.comparing, attempt=1)
    cancelled = client.post(f"/v1/jobs/{method['control_job_id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    failed = client.get(f"/v1/jobs/{method['id']}").json()
    assert failed["status"] == "failed" and failed["failure_reason"] == "cancelled"
    assert f"the control arm {method['control_job_id']} cancelled" in failed["failure_message"]
    assert client.post(f"/v1/jobs/{method['id']}/retry").json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{method['control_job_id']}").json()["status"] == "queued"


def test_a_succeeded_control_keeps_its_run_when_the_job_is_retried(client, control_body, sessions):
    method = client.post("/v1/jobs", json=control_body()).json()
    set_status(sessions, method["control_job_id"], S.succeeded, attempt=1)
    set_status(sessions, method["id"], S.failed, attempt=1)
    assert client.post(f"/v1/jobs/{method['id']}/retry").json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{method['control_job_id']}").json()["status"] == "succeeded"


def test_each_arm_counts_against_the_tenant_limit_until_the_job_waits(make_client, new_key, control_body, sessions):
    client = make_client(new_key("one-slot"), max_active_jobs_per_tenant=1)
    method = client.get(f"/v1/jobs/{client.post('/v1/jobs', json=control_body()).json()['id']}").json()
    control = client.get(f"/v1/jobs/{method['control_job_id']}").json()
    assert method["queue_info"]["held"] is False
    assert control["queue_info"]["held"] is True  # the job itself took the one slot

    set_status(sessions, method["id"], S.comparing, attempt=1)  # a waiting job holds no worker: the slot frees up
    with sessions() as session:
        released = repository.dispatchable_held_jobs(session, 1)
        session.rollback()
    assert [job.job_id for job in released] == [control["id"]]


def store_arm(storage, job: dict[str, Any], folder: Path, arc_right: int) -> None:
    run = finished_run(folder, JobSpec.model_validate(job["spec"]), arm(arc_right, 30))
    for path in run.iterdir():
        storage.put_file(artifact_key(job["id"], path.name), path)


@pytest.mark.parametrize(("min_lift", "passed"), [(0.05, True), (0.9, False)])
def test_the_arm_that_ends_last_reports_the_lift(
    client, control_body, sessions, storage, tmp_path, min_lift, passed
):  # fmt: skip
    method = client.post("/v1/jobs", json=control_body(min_lift=min_lift)).json()
    control = client.get(f"/v1/jobs/{method['control_job_id']}").json()
    store_arm(storage, method, tmp_path / "m", arc_right=22)
    store_arm(storage, control, tmp_path / "c", arc_right=12)
    set_status(sessions, method["id"], S.comparing, attempt=1)
    assert control_arm.settle(sessions, storage, method["id"]) is None  # the control still runs

    set_status(sessions, control["id"], S.succeeded, attempt=1)
    assert control_arm.settle(sessions, storage, control["id"]) is S.succeeded
    assert control_arm.settle(sessions, storage, method["id"]) is None  # concluded once

    assert client.get(f"/v1/jobs/{method['id']}").json()["status"] == "succeeded"
    report = client.get(f"/v1/jobs/{method['id']}/report").json()
    lift = report["lift"]["mean_recovery"]
    assert lift["estimate"] == pytest.approx(10 / 28) and lift["low"] <= lift["estimate"] <= lift["high"]
    assert report["control"]["language"]["suites"][0]["after"] == pytest.approx(12 / 40)
    gate = next(g for g in report["gates"] if g["name"] == "min_lift")
    assert gate["passed"] is passed and report["passed"] is passed
    assert storage.exists(artifact_key(method["id"], "report.md"))
    events = client.get(f"/v1/jobs/{method['id']}/events").json()["items"]
    comparison = next(e for e in events if e["type"] == "comparison")
    assert comparison["data"]["control_job_id"] == control["id"]
    assert comparison["message"].startswith(f"Compared with the control arm {control['id']}: mean-recovery lift +0.357")


def test_arms_that_cannot_be_compared_fail_the_job(client, control_body, sessions, storage, tmp_path):
    method = client.post("/v1/jobs", json=control_body()).json()
    store_arm(storage, method, tmp_path / "m", arc_right=22)  # the control uploaded nothing
    set_status(sessions, method["id"], S.comparing, attempt=1)
    set_status(sessions, method["control_job_id"], S.succeeded, attempt=1)
    with sessions() as session:
        assert repository.waiting_for_final_control(session) == [method["id"]]

    assert control_arm.settle_stranded(sessions, storage) == 1  # the sweeper's pass

    failed = client.get(f"/v1/jobs/{method['id']}").json()
    assert failed["status"] == "failed" and failed["failure_reason"] == "bad_input"
    assert "has no report.json" in failed["failure_message"]
