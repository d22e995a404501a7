"""A job with `evaluation.control: true` run by real workers: both arms train, and the job ends succeeded with the
lift over its control in its report. On the embedded default through REST and the CI CLI with one worker (no
deadlock: the job waits for its control without holding the worker), and on Postgres + S3 with two slots."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from service.client.cli import submit
from service.lifecycle import JobStatus
from service.models import Job
from service.storage_layout import artifact_key
from tests.engine.conftest import NUMBERS
from tests.worker.conftest import Stack, job_spec
from tests.worker.test_embedded import serve_embedded

EXIT_GATE_FAILED = 1


def control_job(world: Path, queue: str, **gates: float) -> dict[str, Any]:
    """The tiny job (two steps) with a language suite, and its control arm."""
    suite = world / "sums.jsonl"
    items = [
        {"question": f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?", "choices": list(NUMBERS[:6]), "answer": a + b}
        for a in range(3)
        for b in range(3)
    ]
    suite.write_text("".join(json.dumps(item) + "\n" for item in items))
    spec = job_spec(world, queue, max_steps=2, checkpoint_every=2)
    spec["evaluation"] = {"language": [{"name": "sums", "uri": str(suite)}], "gates": gates, "control": True}
    return spec


def assert_lift_reported(report: dict[str, Any], control_job_id: str) -> None:
    assert report["control"]["language"]["suites"][0]["name"] == "sums"
    suite_lift = report["lift"]["suites"][0]
    assert suite_lift["name"] == "sums" and suite_lift["n_items"] == 9
    assert suite_lift["low"] <= suite_lift["estimate"] <= suite_lift["high"]  # the 95% interval
    assert {"estimate", "low", "high"} <= set(report["lift"]["mean_recovery"])
    assert report["provenance"]["control_run"] == control_job_id


def test_one_embedded_worker_runs_both_arms_and_submit_wait_fails_on_the_lift_gate(
    tiny_world: Path, tmp_path: Path
) -> None:
    with serve_embedded(tiny_world, tmp_path) as (_, client, key):
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(control_job(tiny_world, "gpu", min_lift=100.0)))  # cannot be met
        junit = tmp_path / "junit.xml"
        args = [str(spec_path), "--wait", "--junit", str(junit), "--poll-interval", "0.5", "--timeout", "400"]
        result = CliRunner().invoke(submit, [*args, "--server", str(client.base_url).rstrip("/"), "--api-key", key])

        assert result.exit_code == EXIT_GATE_FAILED, (result.output, (tmp_path / "serve.log").read_text()[-3000:])
        assert "lift over the control" in result.output
        job = client.get(f"/v1/jobs/{result.stdout.strip()}").json()
        assert job["status"] == "succeeded"  # only once the lift exists
        control = client.get(f"/v1/jobs/{job['control_job_id']}").json()
        assert control["status"] == "succeeded" and control["control_of"] == job["id"]
        assert control["spec"]["method"]["kd_sources"] == "none"
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        assert_lift_reported(report, control["id"])
        gate = next(g for g in report["gates"] if g["name"] == "min_lift")
        assert gate["passed"] is False and report["passed"] is False
        case = ET.parse(junit).getroot().find(".//testcase[@name='min_lift']")
        assert case is not None and case.find("failure") is not None
        statuses = [e["data"]["status"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()["items"]
                    if e["type"] == "status"]  # fmt: skip
        assert statuses[-2:] == ["comparing", "succeeded"]


def test_two_slots_run_the_arms_side_by_side(stack: Stack, shared_worker: Any, tiny_world: Path) -> None:
    job_id = stack.submit(control_job(tiny_world, stack.queue, min_lift=-100.0))
    control_id = stack.job(job_id).control_job_id
    assert control_id is not None

    job = stack.wait_status(job_id, {JobStatus.succeeded, JobStatus.failed}, timeout=240)

    assert job.status is JobStatus.succeeded, job.failure_message
    assert stack.job(control_id).status is JobStatus.succeeded
    with stack.sessions() as session:
        report = session.get(Job, job_id).report
    assert_lift_reported(report, control_id)
    gate = next(g for g in report["gates"] if g["name"] == "min_lift")
    assert gate["applicable"] is True and gate["value"] == report["lift"]["mean_recovery"]["low"]
    assert stack.storage.exists(artifact_key(job_id, "report.md"))
