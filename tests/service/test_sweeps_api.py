"""The sweeps API on Postgres and on SQLite: create, list, get, tenant isolation, Idempotency-Key, the tenant's job
limit, cancel, and the best arm once every arm has ended (arms moved by the worker's own repository calls)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from lingudistill.spec import JobSpec
from service.db import session_scope
from service.jobs import repository
from service.lifecycle import FailureReason, JobStatus
from service.models import Job
from service.sweeps.service import finalise_after_job
from tests.client.live import make_report
from tests.evaluation.test_compare import arm as compare_arm
from tests.evaluation.test_compare import finished_run, make_spec
from tests.service.test_comparison import store_run

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
S = JobStatus
GRID = {"method.kd_weight": [0.5, 1, 2]}


@pytest.fixture
def sweep_body(spec_body):
    def make(grid: dict[str, list[Any]] | None = None, **extra: Any) -> dict[str, Any]:
        base = spec_body("sweep-base", evaluation={"language": [{"name": "arc", "uri": "s3://data/arc.jsonl"}]})
        return {"base": base, "grid": grid or GRID, **extra}

    return make


def finish(sessions, job_id: str, *, after: float | None) -> None:
    """Claim the job and end it as a worker would: succeeded with a report whose language score is `after`, or
    failed (after None)."""
    with session_scope(sessions) as session:
        repository.mark_dispatched(session, [job_id])
    with session_scope(sessions) as session:
        claim = repository.claim_job(session, job_id, "test-worker", 60)
        assert claim is not None
    with session_scope(sessions) as session:
        if after is None:
            repository.transition(session, job_id, claim.attempt, S.failed, failure_reason=FailureReason.bad_input)
        else:
            for status in (S.running, S.evaluating):
                repository.transition(session, job_id, claim.attempt, status)
            report = make_report(JobSpec.model_validate(claim.spec.model_dump()), after)
            repository.transition(session, job_id, claim.attempt, S.succeeded, report=dict(report))


def test_a_sweep_submits_one_job_per_arm_and_its_control(client, sweep_body, dispatcher, sessions):
    response = client.post("/v1/sweeps", json=sweep_body(control=True))
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["id"].startswith("swp_") and sweep["status"] == "running" and sweep["name"] == "sweep-base"
    assert [a["label"] for a in sweep["arms"]] == [
        "method.kd_weight=0.5",
        "method.kd_weight=1",
        "method.kd_weight=2",
        "control",
    ]
    assert [a["is_control"] for a in sweep["arms"]] == [False, False, False, True]
    assert {a["status"] for a in sweep["arms"]} == {"queued"}
    assert len(dispatcher.sent) == 4
    jobs = {a["job_id"]: client.get(f"/v1/jobs/{a['job_id']}").json() for a in sweep["arms"]}
    specs = [jobs[a["job_id"]]["spec"] for a in sweep["arms"]]
    assert [s["method"]["kd_weight"] for s in specs] == [0.5, 1, 2, 1]
    assert [s["method"]["kd_sources"] for s in specs] == ["selective"] * 3 + ["none"]
    assert len({s["training"]["seed"] for s in specs}) == 1, "one seed: the control shares every arm's data order"
    assert not any(s["evaluation"]["control"] for s in specs)
    assert [jobs[a["job_id"]]["name"] for a in sweep["arms"]][-1] == "sweep-base-control"
    assert {(j["sweep_id"], j["sweep_arm"]) for j in jobs.values()} == {
        (sweep["id"], a["label"]) for a in sweep["arms"]
    }
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["arms"] == sweep["arms"]


def test_sweeps_are_listed_newest_first_a_page_at_a_time(client, sweep_body):
    ids = [client.post("/v1/sweeps", json=sweep_body({"method.kd_weight": [1]})).json()["id"] for _ in range(3)]
    first = client.get("/v1/sweeps", params={"limit": 2}).json()
    assert [s["id"] for s in first["items"]] == ids[::-1][:2] and first["has_more"]
    second = client.get("/v1/sweeps", params={"limit": 2, "after": first["next_cursor"]}).json()
    assert [s["id"] for s in second["items"]] == [ids[0]] and not second["has_more"]


def test_a_bad_path_or_value_is_a_422_naming_the_path_and_the_arm(client, sweep_body, dispatcher):
    response = client.post("/v1/sweeps", json=sweep_body({"method.kd_wieght": [1, 2]}))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_sweep"
    assert "arm method.kd_wieght=1" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "grid", "method.kd_wieght"]

    problem = client.post("/v1/sweeps", json=sweep_body({"method.temperature": [1, -2]})).json()
    assert problem["code"] == "invalid_sweep" and "arm method.temperature=-2" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "grid", "method.temperature"]
    assert dispatcher.sent == [], "no arm is submitted unless every arm is valid"


def test_a_control_is_refused_when_the_grid_changes_more_than_the_method(client, sweep_body):
    response = client.post("/v1/sweeps", json=sweep_body({"training.lr": [1e-5, 2e-5]}, control=True))
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_sweep" and "training.lr" in problem["detail"]


def test_a_sweep_over_the_arm_limit_is_refused(make_client, new_key, sweep_body):
    client = make_client(new_key("big"), max_sweep_arms=3)
    response = client.post("/v1/sweeps", json=sweep_body(control=True))
    assert response.status_code == 422 and response.json()["code"] == "sweep_too_large"
    assert client.post("/v1/sweeps", json=sweep_body()).status_code == 201


def test_another_tenants_sweep_is_not_found(make_client, new_key, client, sweep_body):
    sweep = client.post("/v1/sweeps", json=sweep_body()).json()
    other = make_client(new_key("other"))
    for method, path in (
        ("GET", f"/v1/sweeps/{sweep['id']}"),
        ("POST", f"/v1/sweeps/{sweep['id']}/cancel"),
        ("GET", f"/v1/sweeps/{sweep['id']}/report"),
        ("GET", f"/v1/sweeps/{sweep['id']}/report/plots/loss.svg"),
    ):
        response = other.request(method, path)
        assert response.status_code == 404 and response.json()["code"] == "sweep_not_found", path
    assert other.get("/v1/sweeps").json()["items"] == []
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["arms"][0]["status"] == "queued", "not cancelled"


def test_an_idempotency_key_replays_the_sweep_and_never_creates_its_arms_twice(client, sweep_body, sessions):
    headers = {"Idempotency-Key": "sweep-1"}
    with sessions() as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))  # the database is shared by the session
    first = client.post("/v1/sweeps", json=sweep_body(), headers=headers)
    again = client.post("/v1/sweeps", json=sweep_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.sweep_id == first.json()["id"])) == 3
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before + 3
    changed = client.post("/v1/sweeps", json=sweep_body({"method.kd_weight": [3]}), headers=headers)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"


def test_arms_past_the_tenants_job_limit_are_held_not_refused(make_client, new_key, sweep_body, dispatcher):
    client = make_client(new_key("busy"), max_active_jobs_per_tenant=2)
    sweep = client.post("/v1/sweeps", json=sweep_body(control=True)).json()
    held = [client.get(f"/v1/jobs/{a['job_id']}").json()["queue_info"]["held"] for a in sweep["arms"]]
    assert held == [False, False, True, True]
    assert len(dispatcher.sent) == 2


def test_cancel_cancels_every_arm_and_ends_the_sweep(client, sweep_body):
    sweep = client.post("/v1/sweeps", json=sweep_body(control=True)).json()
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert {a["status"] for a in body["arms"]} == {"cancelled"}
    assert body["status"] == "cancelled" and body["best_job_id"] is None and body["finished_at"]
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").json()["status"] == "cancelled"  # idempotent


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_best_arm_is_chosen_once_every_arm_has_ended_failed_arms_left_out(client, sweep_body, sessions, mode):
    body = sweep_body({"method.kd_weight": [0.5, 1, 2, 4]}, select={"metric": "language.arc.recovery", "mode": mode})
    sweep = client.post("/v1/sweeps", json=body).json()
    arms = [a["job_id"] for a in sweep["arms"]]
    afters = [0.5, 0.7, None, 0.6]  # recovery (after - 0.4) / 0.4: 0.25, 0.75, failed, 0.5
    for job_id, after in zip(arms[:3], afters[:3], strict=True):
        finish(sessions, job_id, after=after)
    running = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert running["status"] == "running" and running["best_job_id"] is None
    assert [a["metric"] for a in running["arms"]] == pytest.approx([0.25, 0.75, None, None])
    finish(sessions, arms[3], after=afters[3])

    done = client.get(f"/v1/sweeps/{sweep['id']}").json()

    best = arms[1] if mode == "max" else arms[0]
    assert done["status"] == "succeeded" and done["best_job_id"] == best and done["finished_at"]
    assert done["best_arm"] == ("method.kd_weight=1" if mode == "max" else "method.kd_weight=0.5")
    assert done["lift"] is None and done["passed"] is True
    report = client.get(f"/v1/sweeps/{sweep['id']}/report").json()
    assert [row["best"] for row in report["rows"]] == [a == best for a in arms]
    assert [row["status"] for row in report["rows"]] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert "| method.kd_weight=4 | succeeded | 0.5 |" in report["markdown"]
    for plot in report["plots"]:
        svg = client.get(plot)
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert svg.text.startswith("<svg")
    assert client.get(f"/v1/sweeps/{sweep['id']}/report/plots/nope.svg").json()["code"] == "plot_not_found"


def test_a_sweep_whose_arms_all_failed_has_no_best_arm(client, sweep_body, sessions):
    sweep = client.post("/v1/sweeps", json=sweep_body({"method.kd_weight": [1]}, control=True)).json()
    for arm in sweep["arms"]:
        finish(sessions, arm["job_id"], after=None if not arm["is_control"] else 0.5)
    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["status"] == "failed" and done["best_job_id"] is None and done["lift"] is None


def test_the_last_arms_hook_stores_the_best_arm_and_its_lift_over_the_control_once(
    client, sweep_body, sessions, storage, tmp_path
):
    sweep = client.post("/v1/sweeps", json=sweep_body({"method.kd_weight": [1, 2]}, control=True)).json()
    method_a, method_b, control = (arm["job_id"] for arm in sweep["arms"])
    for job_id, after in ((method_a, 0.5), (method_b, 0.7), (control, 0.45)):
        finish(sessions, job_id, after=after)
    # the run files the worker uploads: the best arm got 22 of 40 items right, the control 12 (recovery lift 10/28)
    store_run(storage, method_b, finished_run(tmp_path / "b", make_spec(min_lift=0.05), compare_arm(22, 30)))
    store_run(storage, control, finished_run(tmp_path / "c", make_spec("none"), compare_arm(12, 29)))

    assert finalise_after_job(sessions, storage, control) is True
    assert finalise_after_job(sessions, storage, control) is False  # stored once

    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["best_job_id"] == method_b
    lift = done["lift"]
    assert lift["control_job_id"] == control and lift["error"] is None and lift["confidence"] == 0.95
    mean = lift["mean_recovery"]
    assert mean["estimate"] == pytest.approx(10 / 28) and mean["low"] <= mean["estimate"] <= mean["high"]
    assert {row["name"] for row in lift["suites"]} == {"arc", "vqa"}
    assert "min_lift" in [gate["name"] for gate in done["gates"]] and done["passed"] is True
    markdown = client.get(f"/v1/sweeps/{sweep['id']}/report").json()["markdown"]
    assert f"## Lift of the best arm over the control ({control})" in markdown


def test_a_control_that_failed_leaves_the_best_arm_without_a_lift(client, sweep_body, sessions):
    sweep = client.post("/v1/sweeps", json=sweep_body({"method.kd_weight": [1]}, control=True)).json()
    arm, control = (a["job_id"] for a in sweep["arms"])
    finish(sessions, arm, after=0.6)
    finish(sessions, control, after=None)
    done = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["best_job_id"] == arm
    assert done["lift"] == {
        "control_job_id": control,
        "confidence": None,
        "mean_recovery": None,
        "suites": [],
        "error": "the control arm failed",
    }
