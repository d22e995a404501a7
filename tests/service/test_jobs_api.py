"""The core job flows, on Postgres and on SQLite."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.db import session_scope
from service.idempotency.service import prune_expired
from service.jobs import repository
from service.lifecycle import JobStatus
from service.models import Checkpoint, IdempotencyKey, Job, Tenant, utcnow

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


def set_status(sessions, job_id: str, status: JobStatus, **fields) -> None:
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, **fields))
        session.commit()


def test_create_job_resolves_the_spec_and_dispatches_after_commit(client, spec_body, dispatcher, sessions):
    response = client.post("/v1/jobs", json=spec_body())
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("job_") and job["status"] == "queued"
    assert isinstance(job["spec"]["training"]["seed"], int)
    assert job["spec"]["method"]["divergence"] == "forward_kl"  # defaults written out
    assert job["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    assert job["progress"]["total_steps"] == 100 and job["progress"]["attempt"] == 0
    assert [w.job_id for w in dispatcher.sent] == [job["id"]]
    fetched = client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["spec"] == job["spec"]
    assert fetched["queue_info"]["position"] == 0
    assert "waiting for a worker on queue gpu" in fetched["queue_info"]["reason"]


def test_invalid_spec_is_a_422_problem_with_field_errors(client, spec_body, dispatcher):
    body = spec_body()
    body["training"]["max_steps"] = 0
    body["unknown"] = 1
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    locs = [e["loc"] for e in problem["errors"]]
    assert ["body", "training", "max_steps"] in locs and ["body", "unknown"] in locs
    assert dispatcher.sent == []


def test_counts_the_worker_cannot_use_are_refused_at_submit(client, spec_body, dispatcher):
    body = spec_body()
    body["mixture"][0]["max_records"] = 10**30  # reached itertools.islice in the worker before (issue 15)
    body["evaluation"] = {"language": [{"name": "e", "uri": "s3://data/e.jsonl", "max_items": 10**30}], "every": 10**30}
    body["resources"] = {"max_runtime_s": 10**30}
    problem = client.post("/v1/jobs", json=body).json()
    assert problem["code"] == "validation_error"
    assert sorted(e["loc"] for e in problem["errors"]) == [
        ["body", "evaluation", "every"],
        ["body", "evaluation", "language", 0, "max_items"],
        ["body", "mixture", 0, "max_records"],
        ["body", "resources", "max_runtime_s"],
    ]
    assert dispatcher.sent == []


def test_a_rolled_back_request_dispatches_nothing(make_client, new_key, spec_body, dispatcher, sessions, monkeypatch):
    from service.jobs import service

    def boom(*args, **kwargs):
        raise RuntimeError("crash after the insert")

    monkeypatch.setattr(service, "job_view", boom)
    client = make_client(new_key("acme"), raise_server_exceptions=False)
    response = client.post("/v1/jobs", json=spec_body())
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert "crash" not in response.text  # no internals leak
    assert dispatcher.sent == []
    with sessions() as session:
        assert session.scalar(select(Job).where(Job.name == "repair-qwen2vl")) is None


def test_list_filters(client, spec_body, sessions):
    a = client.post("/v1/jobs", json=spec_body("alpha", metadata={"team": "vlm", "run": "1"})).json()
    b = client.post("/v1/jobs", json=spec_body("beta", metadata={"team": "nlp"})).json()
    set_status(sessions, b["id"], JobStatus.failed)

    def ids(**params):
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["items"]]

    assert ids() == [b["id"], a["id"]]  # newest first
    assert ids(status="failed") == [b["id"]]
    assert ids(status=["queued", "failed"]) == [b["id"], a["id"]]
    assert ids(name="alpha") == [a["id"]]
    assert ids(metadata="team=nlp") == [b["id"]]
    assert ids(metadata=["team=vlm", "run=1"]) == [a["id"]]
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == []
    assert ids(created_before=future) == [b["id"], a["id"]]
    assert client.get("/v1/jobs", params={"metadata": "nokey"}).status_code == 422


def test_the_list_leaves_the_spec_out_unless_asked_for_the_full_view(client, spec_body):
    created = client.post("/v1/jobs", json=spec_body("listed")).json()
    summary = client.get("/v1/jobs").json()["items"][0]
    full = client.get("/v1/jobs", params={"view": "full"}).json()["items"][0]
    assert summary["id"] == full["id"] == created["id"]
    assert summary["spec"] is None and full["spec"] == created["spec"]
    assert {k: v for k, v in summary.items() if k != "spec"} == {k: v for k, v in full.items() if k != "spec"}
    assert client.get("/v1/jobs", params={"view": "everything"}).status_code == 422


def test_pagination_is_stable_while_jobs_are_inserted(client, spec_body):
    created = [client.post("/v1/jobs", json=spec_body(f"job-{i}")).json()["id"] for i in range(7)]
    first = client.get("/v1/jobs", params={"limit": 3}).json()
    for i in range(5):  # new jobs arrive between page requests
        client.post("/v1/jobs", json=spec_body(f"new-{i}"))
    seen = [j["id"] for j in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/jobs", params={"limit": 3, "after": cursor}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(created))  # no duplicate, no gap, newest first
    assert client.get("/v1/jobs", params={"after": "garbage!"}).json()["code"] == "invalid_cursor"


def test_cancel_queued_is_immediate_and_running_goes_through_cancelling(client, spec_body, sessions):
    queued = client.post("/v1/jobs", json=spec_body("q")).json()
    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["failure_reason"] == "cancelled"

    running = client.post("/v1/jobs", json=spec_body("r")).json()
    set_status(sessions, running["id"], JobStatus.running, attempt=1)
    response = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.json()["status"] == "cancelling" and response.json()["cancel_requested_at"]
    assert client.post(f"/v1/jobs/{running['id']}/cancel").json()["status"] == "cancelling"  # idempotent

    done = client.post("/v1/jobs", json=spec_body("d")).json()
    set_status(sessions, done["id"], JobStatus.succeeded)
    response = client.post(f"/v1/jobs/{done['id']}/cancel")
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"


def test_retry_failed_keeps_the_attempt_and_resumes_from_the_last_checkpoint(client, spec_body, sessions, dispatcher):
    job = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, job["id"], JobStatus.failed, attempt=2, failure_reason="out_of_memory")
    with sessions() as session:
        for step, complete in ((50, True), (75, False)):
            session.add(Checkpoint(job_id=job["id"], attempt=2, step=step, storage_prefix="x", complete=complete))
        session.commit()
    dispatcher.sent.clear()
    response = client.post(f"/v1/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["status"] == "queued" and retried["attempt"] == 2
    assert retried["resume_checkpoint_step"] == 50 and retried["failure_reason"] is None
    assert [w.job_id for w in dispatcher.sent] == [job["id"]]
    again = client.post(f"/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"


def test_queue_position_and_tenant_limit(make_client, new_key, spec_body, sessions, dispatcher):
    client = make_client(new_key("busy"), max_active_jobs_per_tenant=2)
    body = spec_body(resources={"queue": "qpos", "priority": 5})
    first, second, third = (client.post("/v1/jobs", json=body).json() for _ in range(3))
    urgent = client.post("/v1/jobs", json=spec_body(resources={"queue": "qpos", "priority": 9})).json()
    # the embedded broker's one queue holds every job: `base` counts those other tests left queued (committed)
    base = client.get(f"/v1/jobs/{first['id']}").json()["queue_info"]["position"]
    assert client.get(f"/v1/jobs/{second['id']}").json()["queue_info"]["position"] == base + 1
    held = client.get(f"/v1/jobs/{third['id']}").json()["queue_info"]
    assert held["held"] and "tenant limit of 2" in held["reason"]
    assert client.get(f"/v1/jobs/{urgent['id']}").json()["queue_info"]["held"]
    assert {w.job_id for w in dispatcher.sent} == {first["id"], second["id"]}
    # when one finishes, the sweeper releases the most urgent held job
    set_status(sessions, first["id"], JobStatus.succeeded)
    with sessions() as session:
        released = repository.dispatchable_held_jobs(session, default_limit=2)
        assert [j.job_id for j in released] == [urgent["id"]]
        repository.mark_dispatched(session, [urgent["id"]])
        session.commit()
    # the embedded broker is one first-in-first-out queue: the urgent job, sent last, waits behind the second
    info = client.get(f"/v1/jobs/{urgent['id']}").json()["queue_info"]
    assert (info["position"], info["own_ahead"], info["held"], info["queue"]) == (base + 1, 1, False, "gpu")
    assert info["reason"] == f"waiting for a worker on queue gpu ({base + 1} job(s) ahead, served first in, first out)"
    assert client.get(f"/v1/jobs/{second['id']}").json()["queue_info"]["position"] == base


REDIS_BROKER = f"redis://127.0.0.1:6379/{os.environ.get('LINGUDISTILL_TEST_REDIS_DB', '13')}"


def test_with_redis_the_position_follows_priority_on_the_jobs_own_queue(make_client, new_key, spec_body):
    mine, theirs = (make_client(new_key(), broker_url=REDIS_BROKER) for _ in range(2))
    a100, h100 = f"a100-{secrets.token_hex(3)}", f"h100-{secrets.token_hex(3)}"  # queues of this test alone
    normal = spec_body(resources={"queue": a100, "priority": 5})
    first = mine.post("/v1/jobs", json=normal).json()
    other_tenant = theirs.post("/v1/jobs", json=normal).json()
    theirs.post("/v1/jobs", json=spec_body(resources={"queue": h100, "priority": 9}))  # another queue
    urgent = mine.post("/v1/jobs", json=spec_body(resources={"queue": a100, "priority": 9})).json()
    positions = {
        name: mine.get(f"/v1/jobs/{job['id']}").json()["queue_info"]
        for name, job in (("first", first), ("urgent", urgent))
    }
    assert (positions["urgent"]["position"], positions["urgent"]["own_ahead"]) == (0, 0)
    assert (positions["first"]["position"], positions["first"]["own_ahead"]) == (1, 1)
    assert positions["first"]["reason"] == (
        f"waiting for a worker on queue {a100} (1 job(s) ahead, served by priority, then in order of submission)"
    )
    behind = theirs.get(f"/v1/jobs/{other_tenant['id']}").json()["queue_info"]
    assert (behind["position"], behind["own_ahead"]) == (2, 0)  # two of another tenant's, shown as a count only
    assert mine.get(f"/v1/jobs/{other_tenant['id']}").status_code == 404


@pytest.fixture
def own_queue(make_client, new_key, spec_body):
    """A client on a Redis broker, whose queues are separate, and a spec on a queue of this test's own."""
    queue = f"q-{secrets.token_hex(4)}"
    return make_client(new_key(), broker_url=REDIS_BROKER), lambda: spec_body(resources={"queue": queue})


def test_the_estimated_start_follows_recent_run_times(own_queue, sessions):
    client, spec_body = own_queue
    now = utcnow()
    for minutes in (100, 300):  # two recent runs: a mean of 200 s
        done = client.post("/v1/jobs", json=spec_body()).json()
        set_status(
            sessions, done["id"], JobStatus.succeeded, started_at=now - timedelta(seconds=minutes), finished_at=now
        )
    ahead, waiting = (client.post("/v1/jobs", json=spec_body()).json() for _ in range(2))
    info = client.get(f"/v1/jobs/{waiting['id']}").json()["queue_info"]
    assert (info["position"], info["estimated_start_s"]) == (1, 200.0)  # no job running: one mean run per job ahead
    running = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, running["id"], JobStatus.running, started_at=now, step=10, total_steps=110, step_time_s=0.5)
    info = client.get(f"/v1/jobs/{waiting['id']}").json()["queue_info"]
    assert info["estimated_start_s"] == 50.0 + 200.0  # the running job's ETA, then one mean run
    assert info["estimated_start_at"] is not None
    set_status(sessions, ahead["id"], JobStatus.cancelled)
    assert client.get(f"/v1/jobs/{waiting['id']}").json()["queue_info"]["estimated_start_s"] == 50.0


def test_without_history_there_is_no_estimate(own_queue):
    client, spec_body = own_queue
    job = client.post("/v1/jobs", json=spec_body()).json()
    info = client.get(f"/v1/jobs/{job['id']}").json()["queue_info"]
    assert (info["position"], info["estimated_start_s"], info["estimated_start_at"]) == (0, None, None)


def test_tenant_override_of_the_job_limit(make_client, new_key, spec_body, sessions):
    key = new_key("small")
    with sessions() as session:
        session.execute(update(Tenant).where(Tenant.name == "small").values(max_active_jobs=1))
        session.commit()
    client = make_client(key)
    client.post("/v1/jobs", json=spec_body())
    second = client.post("/v1/jobs", json=spec_body()).json()
    assert client.get(f"/v1/jobs/{second['id']}").json()["queue_info"]["held"]


def test_idempotency_replays_and_refuses_a_different_body(client, spec_body, dispatcher):
    headers = {"Idempotency-Key": "abc-1"}
    first = client.post("/v1/jobs", json=spec_body(), headers=headers)
    replay = client.post("/v1/jobs", json=spec_body(), headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay.headers["idempotent-replayed"] == "true"
    assert len(dispatcher.sent) == 1
    other = client.post("/v1/jobs", json=spec_body("other-name"), headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_idempotency_keys_are_per_tenant(make_client, new_key, spec_body):
    headers = {"Idempotency-Key": "shared"}
    a = make_client(new_key("a")).post("/v1/jobs", json=spec_body(), headers=headers).json()
    b = make_client(new_key("b")).post("/v1/jobs", json=spec_body(), headers=headers).json()
    assert a["id"] != b["id"]


def test_a_failed_request_frees_its_idempotency_key(client, spec_body):
    headers = {"Idempotency-Key": "k2"}
    bad = spec_body(student="s3://Bad_Bucket/x")
    assert client.post("/v1/jobs", json=bad, headers=headers).status_code == 422
    assert client.post("/v1/jobs", json=bad, headers=headers).json()["code"] == "uri_not_allowed"  # not replayed


def test_a_replay_after_cancel_answers_the_job_as_it_is_now(client, spec_body):
    headers = {"Idempotency-Key": "cancel-then-replay"}
    first = client.post("/v1/jobs", json=spec_body(), headers=headers).json()
    client.post(f"/v1/jobs/{first['id']}/cancel")
    replay = client.post("/v1/jobs", json=spec_body(), headers=headers)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first["id"] and first["status"] == "queued"
    assert replay.json()["status"] == "cancelled"


def test_idempotency_keys_expire_after_the_retention_and_are_pruned(client, spec_body, sessions, settings):
    headers = {"Idempotency-Key": "old-key"}
    first = client.post("/v1/jobs", json=spec_body(), headers=headers).json()
    kept = client.post("/v1/jobs", json=spec_body(), headers={"Idempotency-Key": "new-key"}).json()
    expired = utcnow() - timedelta(hours=settings.idempotency_retention_h, minutes=1)
    with session_scope(sessions) as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old-key").values(created_at=expired))
    again = client.post("/v1/jobs", json=spec_body(), headers=headers)
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first["id"]  # past the retention, the key is new again
    with session_scope(sessions) as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old-key").values(created_at=expired))
    assert prune_expired(sessions, settings.idempotency_retention_h, batch_size=1) == 1
    with sessions() as session:
        mine = select(IdempotencyKey.key).where(IdempotencyKey.key.in_(["old-key", "new-key"]))
        assert session.scalars(mine).all() == ["new-key"]
    assert client.post("/v1/jobs", json=spec_body(), headers={"Idempotency-Key": "new-key"}).json()["id"] == kept["id"]


def test_report_not_ready_then_ready(client, spec_body, sessions):
    job = client.post("/v1/jobs", json=spec_body()).json()
    response = client.get(f"/v1/jobs/{job['id']}/report")
    assert response.status_code == 404 and response.json()["code"] == "report_not_ready"
    set_status(sessions, job["id"], JobStatus.succeeded, report={"verdict": "pass", "recovery": 0.12})
    assert client.get(f"/v1/jobs/{job['id']}/report").json() == {"verdict": "pass", "recovery": 0.12}


def test_a_failure_shows_no_worker_path_and_events_say_what_happened(client, spec_body, sessions):
    job = client.post("/v1/jobs", json=spec_body()).json()
    with sessions() as session:
        claim = repository.claim_job(session, job["id"], "w", 60)
        repository.append_event(session, job["id"], claim.attempt, "child_error", {"error": "OSError: /srv/w/j/x.bin"})
        message = "DataError: /srv/worker/tmp/job_1/data/train.jsonl:3: no assistant turn"
        repository.transition(session, job["id"], claim.attempt, JobStatus.failed, failure_reason="bad_input",
                              failure_message=message)  # fmt: skip
        session.commit()
    shown = client.get(f"/v1/jobs/{job['id']}").json()
    assert shown["failure_message"] == "DataError: .../train.jsonl:3: no assistant turn"
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["items"]
    assert "/srv/" not in str(events)
    assert [(e["level"], e["message"]) for e in events] == [
        ("info", "Queued."),
        ("info", "Validating."),
        ("error", "The training process failed: OSError: .../x.bin"),
        ("error", "Failed. bad_input: DataError: .../train.jsonl:3: no assistant turn"),
    ]


def test_pause_and_resume_a_queued_job_holds_it_then_dispatches_it_again(client, spec_body, dispatcher):
    job = client.post("/v1/jobs", json=spec_body()).json()
    dispatcher.sent.clear()
    paused = client.post(f"/v1/jobs/{job['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused" and paused.json()["queue_info"] is None
    assert client.post(f"/v1/jobs/{job['id']}/pause").json()["status"] == "paused"  # idempotent
    assert dispatcher.sent == []

    resumed = client.post(f"/v1/jobs/{job['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert [w.job_id for w in dispatcher.sent] == [job["id"]]
    again = client.post(f"/v1/jobs/{job['id']}/resume")
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    messages = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()["items"]]
    assert messages[-2:] == [
        "Paused before it started; it is not dispatched until resumed.",
        "Resumed: queued to continue from the first step.",
    ]


def test_pause_a_running_job_goes_through_pausing_and_gives_its_attempt_back(client, spec_body, sessions):
    job = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, job["id"], JobStatus.running, attempt=1, max_attempts=1, lease_owner="w")
    pausing = client.post(f"/v1/jobs/{job['id']}/pause")
    assert pausing.status_code == 200 and pausing.json()["status"] == "pausing"
    assert client.post(f"/v1/jobs/{job['id']}/pause").json()["status"] == "pausing"  # idempotent
    assert client.post(f"/v1/jobs/{job['id']}/resume").status_code == 409  # not paused yet

    with session_scope(sessions) as session:  # the worker: the checkpoint at step 7, then the pause
        repository.record_checkpoint(session, job["id"], 1, step=7, storage_prefix="x", manifest={}, size_bytes=1)
        outcome = repository.finish_pause(session, job["id"], 1, stopped_at=7)
    assert outcome == repository.PauseOutcome(JobStatus.paused, 7)
    paused = client.get(f"/v1/jobs/{job['id']}").json()
    assert paused["status"] == "paused" and paused["resume_checkpoint_step"] == 7
    assert paused["max_attempts"] == 2  # the paused attempt does not count
    with sessions() as session:
        assert session.get(Job, job["id"]).lease_owner is None
    last = client.get(f"/v1/jobs/{job['id']}/events").json()["items"][-1]
    assert last["message"] == "Paused at step 7 (checkpoint step-000000007); the GPU is free until the job is resumed."

    resumed = client.post(f"/v1/jobs/{job['id']}/resume").json()
    assert resumed["status"] == "queued" and resumed["resume_checkpoint_step"] == 7 and resumed["attempt"] == 1


def test_a_pause_whose_checkpoint_is_missing_fails_the_job(client, spec_body, sessions):
    job = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, job["id"], JobStatus.pausing, attempt=1)
    with session_scope(sessions) as session:
        outcome = repository.finish_pause(session, job["id"], 1, stopped_at=5)
    assert outcome == repository.PauseOutcome(JobStatus.failed, None)
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["failure_reason"] == "infrastructure" and "step 5 could not be written" in failed["failure_message"]


@pytest.mark.parametrize("status", [JobStatus.evaluating, JobStatus.cancelling, JobStatus.succeeded])
def test_pause_is_refused_where_the_lifecycle_does_not_allow_it(client, spec_body, sessions, status):
    job = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, job["id"], status, attempt=1)
    response = client.post(f"/v1/jobs/{job['id']}/pause")
    assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_transition" and status.value in response.json()["detail"]


def test_cancel_of_a_pausing_or_paused_job(client, spec_body, sessions):
    pausing = client.post("/v1/jobs", json=spec_body()).json()
    set_status(sessions, pausing["id"], JobStatus.pausing, attempt=1)
    assert client.post(f"/v1/jobs/{pausing['id']}/cancel").json()["status"] == "cancelling"
    paused = client.post("/v1/jobs", json=spec_body()).json()
    client.post(f"/v1/jobs/{paused['id']}/pause")
    cancelled = client.post(f"/v1/jobs/{paused['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["failure_reason"] == "cancelled"


def test_another_tenant_can_neither_pause_nor_resume(client, make_client, new_key, spec_body):
    job = client.post("/v1/jobs", json=spec_body()).json()
    other = make_client(new_key("globex"))
    for action in ("pause", "resume"):
        response = other.post(f"/v1/jobs/{job['id']}/{action}")
        assert response.status_code == 404 and response.json()["code"] == "job_not_found"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"


def test_a_paused_job_frees_its_tenant_slot_and_its_resume_waits_for_one(make_client, new_key, spec_body, dispatcher):
    client = make_client(new_key("one-slot"), max_active_jobs_per_tenant=1)
    first = client.post("/v1/jobs", json=spec_body()).json()
    client.post(f"/v1/jobs/{first['id']}/pause")
    second = client.post("/v1/jobs", json=spec_body()).json()
    assert client.get(f"/v1/jobs/{second['id']}").json()["queue_info"]["held"] is False  # the paused one holds none

    resumed = client.post(f"/v1/jobs/{first['id']}/resume").json()
    assert resumed["status"] == "queued" and resumed["queue_info"]["held"] is True
    assert resumed["queue_info"]["reason"].startswith("tenant limit of 1")
