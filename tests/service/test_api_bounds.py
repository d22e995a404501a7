"""Integers and names a client sends are refused with a 422 problem on both backends, never a 500 or a cut
connection (issue 15): numbers beyond 64 bits, Unicode digits, 5000-digit headers, NUL bytes."""

from __future__ import annotations

import pytest

from service.lifecycle import JobStatus
from service.params import INT32_MAX, INT64_MAX

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)

TOO_BIG = str(10**20)
HUGE = "9" * 5000  # beyond Python's int() digit limit


@pytest.fixture
def job_id(client, spec_body):
    return client.post("/v1/jobs", json=spec_body()).json()["id"]


def assert_invalid(response, where: list) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert [e["loc"] for e in problem["errors"]] == [where]


@pytest.mark.parametrize("value", [TOO_BIG, HUGE, "-1", "²", str(INT32_MAX + 1)])
def test_event_and_metric_cursors_are_bounded(client, job_id, value):
    if value != str(INT32_MAX + 1):  # an event id is 64-bit; a step is 32-bit
        assert_invalid(client.get(f"/v1/jobs/{job_id}/events", params={"after": value}), ["query", "after"])
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", params={"step_min": value})
    assert_invalid(metrics, ["query", "step_min"])
    assert_invalid(client.get(f"/v1/jobs/{job_id}/metrics", params={"step_max": value}), ["query", "step_max"])


def test_the_largest_64_bit_values_are_accepted(client, job_id):
    assert client.get(f"/v1/jobs/{job_id}/events", params={"after": INT64_MAX}).json()["items"] == []
    assert client.get(f"/v1/jobs/{job_id}/metrics", params={"step_min": INT32_MAX}).json()["series"] == []
    missing = client.get(f"/v1/jobs/{job_id}/checkpoints/{INT32_MAX}/files/model.safetensors")
    assert missing.status_code == 404 and missing.json()["code"] == "checkpoint_not_found"


@pytest.mark.parametrize("step", [TOO_BIG, str(INT32_MAX + 1)])
def test_a_checkpoint_step_beyond_the_column_is_refused(client, job_id, step):
    response = client.get(f"/v1/jobs/{job_id}/checkpoints/{step}/files/model.safetensors")
    assert_invalid(response, ["path", "step"])


@pytest.mark.parametrize("value", [b"\xb2", HUGE.encode(), str(2**63).encode(), b"-3", b"abc"])
def test_a_bad_last_event_id_is_refused_before_the_stream_starts(client, job_id, value):
    client.post(f"/v1/jobs/{job_id}/cancel")  # a final job: a stream that did start would end by itself
    headers = {"Accept": "text/event-stream", "Last-Event-ID": value}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        response.read()
    assert_invalid(response, ["header", "last-event-id"])


def test_a_valid_last_event_id_still_resumes(client, job_id):
    client.post(f"/v1/jobs/{job_id}/cancel")
    first = client.get(f"/v1/jobs/{job_id}/events").json()["items"][0]["id"]
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(first)}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        text = response.read().decode()
    assert response.status_code == 200
    assert f"id: {first}\n" not in text and '"status":"cancelled"' in text.replace(" ", "")


@pytest.mark.parametrize("name", ["bad\x00name", "tab\tname"])
def test_a_control_character_in_a_dataset_name_is_the_same_422_on_both_backends(client, name):
    response = client.post("/v1/datasets", params={"name": name}, content=b'{"prompt": "a", "response": "b"}\n')
    assert_invalid(response, ["query", "name"])
    assert client.get("/v1/datasets").json()["items"] == []


def test_job_status_enum_still_filters(client, job_id):
    # the bounded types changed no other parameter: a status filter still parses
    items = client.get("/v1/jobs", params={"status": JobStatus.queued.value}).json()["items"]
    assert [j["id"] for j in items] == [job_id]
