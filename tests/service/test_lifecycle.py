"""The job lifecycle is defined once (service.lifecycle) and read from there by the API's OpenAPI document (which
the web UI reads) and by the Python client, which loads no server library."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient

from service.lifecycle import FINAL_STATUSES, JobStatus, can_transition

S = JobStatus


def test_the_client_imports_neither_sqlalchemy_nor_fastapi_nor_torch() -> None:
    probe = "import sys, service.client; print([m for m in ('sqlalchemy', 'fastapi', 'torch') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, check=True)
    assert result.stdout.strip() == "[]"


def test_the_openapi_status_enum_is_the_lifecycle_with_its_final_statuses(client: TestClient) -> None:
    schema: dict[str, Any] = client.get("/openapi.json").json()["components"]["schemas"]["JobStatus"]
    assert schema["enum"] == [s.value for s in JobStatus]
    assert set(schema["x-final"]) == {s.value for s in FINAL_STATUSES} == {"succeeded", "failed", "cancelled"}
    assert schema["x-actions"] == {"pause": ["queued", "validating", "running"], "resume": ["paused"]}


def test_the_web_ui_reads_the_lifecycle_from_the_openapi_document(client: TestClient) -> None:
    script = client.get("/ui/static/js/api.js").text
    assert "components.schemas.JobStatus" in script
    assert '"succeeded"' not in script and '"queued"' not in script


def test_a_pause_stops_at_paused_which_is_not_final_and_only_resume_or_cancel_leave() -> None:
    assert not S.pausing.is_final and not S.paused.is_final
    for start in (S.validating, S.running):
        assert can_transition(start, S.pausing)
    assert can_transition(S.queued, S.paused)  # held at once: no worker to stop
    assert not can_transition(S.evaluating, S.pausing)  # training is over: nothing to checkpoint
    assert {s for s in S if can_transition(S.pausing, s)} == {S.paused, S.cancelling, S.failed, S.evaluating}
    assert {s for s in S if can_transition(S.paused, s)} == {S.queued, S.cancelled}
    assert not can_transition(S.paused, S.validating)  # a resume re-queues; a worker claims it from queued
