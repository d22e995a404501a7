"""`lingudistill submit` / `lingudistill jobs` against the live server: every exit code reached by a real outcome.

The job's states are driven from the test through the service's repository (claim, progress, transition,
report), exactly as a worker does, while the CLI waits on it over HTTP."""

from __future__ import annotations

import secrets
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result

from service.client import LinguDistillClient
from service.client.cli import SmoothedEta, jobs, submit
from tests.client.live import JobDriver, LiveServer, make_report

# --timeout: a worker thread that failed must end the test with exit 3, not leave `submit --wait` waiting forever
WAIT = ["--wait", "--poll-interval", "0.1", "--timeout", "180"]


def invoke(command: click.Command, *args: str, server: LiveServer, key: str) -> Result:
    return CliRunner().invoke(command, [*args, "--server", server.url, "--api-key", key], catch_exceptions=False)


@contextmanager
def worker(driver: JobDriver, name: str, outcome: Callable[[str, int, Any], None]) -> Iterator[dict[str, Any]]:
    """A thread that picks up job `name`, trains 4 steps, then calls `outcome(job_id, attempt, spec)`."""
    seen: dict[str, Any] = {}

    def run() -> None:
        try:
            job_id = seen["job_id"] = driver.find(name, timeout=120)  # a loaded machine uploads slowly
            attempt, spec = driver.start(job_id)
            for step in range(1, 5):
                driver.step(job_id, attempt, step, 4, loss=2.0 / step)
            outcome(job_id, attempt, spec)
        except BaseException as exc:
            seen["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield seen
    thread.join(timeout=30)
    if "error" in seen:
        raise seen["error"]


def junit_cases(path: Path) -> dict[str, str | None]:
    """{testcase name: failure message or None}"""
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    return {c.get("name", ""): (f.get("message") if (f := c.find("failure")) is not None else None) for c in cases}


def test_passing_gates_exit_0_with_report_junit_and_uploaded_datasets(
    server: LiveServer, api_key: str, api: LinguDistillClient, driver: JobDriver, spec_file: Any, tmp_path: Path
) -> None:
    name = f"pass-{secrets.token_hex(3)}"
    report_md, junit = tmp_path / "report.md", tmp_path / "report.xml"

    def succeed(job_id: str, attempt: int, spec: Any) -> None:
        driver.succeed(job_id, attempt, make_report(spec, after_language=0.7))  # recovery 0.75 >= 0.25

    with worker(driver, name, succeed) as seen:
        args = [*WAIT, "--report", str(report_md), "--junit", str(junit)]
        result = invoke(submit, str(spec_file(name)), *args, server=server, key=api_key)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == seen["job_id"]  # stdout: the job id alone, for scripts
    assert "running step 4/4" in result.stderr or "succeeded" in result.stderr  # plain progress lines (not a TTY)
    assert "verdict: PASSED" in result.stderr
    assert junit_cases(junit) == {"min_recovery": None, "max_vision_drop": None}
    assert "**Verdict: PASSED**" in report_md.read_text()
    job = api.get_job(seen["job_id"])
    assert job.spec.mixture[0].uri.startswith("dataset://")  # the local file was uploaded
    assert job.spec.mixture[1].uri == "s3://data/vqa.jsonl"  # a remote one was left alone
    assert job.spec.evaluation.language[0].uri.startswith("dataset://")


def test_failed_gate_exit_1(
    server: LiveServer, api_key: str, driver: JobDriver, spec_file: Any, tmp_path: Path
) -> None:
    name = f"gate-{secrets.token_hex(3)}"
    junit = tmp_path / "report.xml"

    def succeed_badly(job_id: str, attempt: int, spec: Any) -> None:
        driver.succeed(job_id, attempt, make_report(spec, after_language=0.45))  # recovery 0.125 < 0.25

    with worker(driver, name, succeed_badly):
        args = [*WAIT, "--junit", str(junit)]
        result = invoke(submit, str(spec_file(name)), *args, server=server, key=api_key)

    assert result.exit_code == 1, result.stderr
    assert "gate min_recovery: FAIL" in result.stderr
    cases = junit_cases(junit)
    assert cases["max_vision_drop"] is None
    assert cases["min_recovery"] is not None and "threshold 0.25" in cases["min_recovery"]


def test_failed_job_exit_2(server: LiveServer, api_key: str, driver: JobDriver, spec_file: Any, tmp_path: Path) -> None:
    name = f"fail-{secrets.token_hex(3)}"
    report_md, junit = tmp_path / "report.md", tmp_path / "report.xml"

    with worker(driver, name, lambda job_id, attempt, spec: driver.fail(job_id, attempt)):
        args = [*WAIT, "--report", str(report_md), "--junit", str(junit)]
        result = invoke(submit, str(spec_file(name)), *args, server=server, key=api_key)

    assert result.exit_code == 2, result.stderr
    assert "failed: bad_input" in result.stderr
    assert "vocabularies differ" in report_md.read_text()
    assert junit_cases(junit) == {"job": "job failed: bad_input"}


def test_cancelled_job_exit_2_through_jobs_commands(
    server: LiveServer, api_key: str, api: LinguDistillClient, spec_file: Any
) -> None:
    submitted = invoke(submit, str(spec_file(f"cancel-{secrets.token_hex(3)}")), server=server, key=api_key)
    assert submitted.exit_code == 0, submitted.stderr  # no --wait: exit at once
    job_id = submitted.stdout.strip()

    cancelled = invoke(jobs, "cancel", job_id, server=server, key=api_key)
    assert cancelled.stdout.strip() == f"{job_id} cancelled"
    waited = invoke(jobs, "wait", job_id, "--poll-interval", "0.1", server=server, key=api_key)
    assert waited.exit_code == 2
    listed = invoke(jobs, "list", "--status", "cancelled", server=server, key=api_key)
    assert job_id in listed.stdout
    events = invoke(jobs, "events", job_id, server=server, key=api_key)
    assert '"status":"cancelled"' in events.stdout


def test_pause_and_resume_through_jobs_commands_and_wait_keeps_waiting_while_paused(
    server: LiveServer, api_key: str, spec_file: Any
) -> None:
    submitted = invoke(submit, str(spec_file(f"pause-{secrets.token_hex(3)}")), server=server, key=api_key)
    job_id = submitted.stdout.strip()

    for _ in range(2):  # a repeated pause answers the paused job
        paused = invoke(jobs, "pause", job_id, server=server, key=api_key)
        assert paused.exit_code == 0 and paused.stdout.strip() == f"{job_id} paused"
    waited = invoke(jobs, "wait", job_id, "--poll-interval", "0.1", "--timeout", "1", server=server, key=api_key)
    assert waited.exit_code == 3  # paused is not final: no verdict yet
    assert f"{job_id} paused" in waited.stderr and f"lingudistill jobs resume {job_id}" in waited.stderr

    resumed = invoke(jobs, "resume", job_id, server=server, key=api_key)
    assert resumed.exit_code == 0 and resumed.stdout.strip() == f"{job_id} queued"
    again = invoke(jobs, "resume", job_id, server=server, key=api_key)
    assert again.exit_code == 3 and "invalid_transition" in again.stderr
    invoke(jobs, "cancel", job_id, server=server, key=api_key)
    assert invoke(jobs, "pause", job_id, server=server, key=api_key).exit_code == 3  # a cancelled job


def test_bad_key_usage_and_missing_objects_exit_3(server: LiveServer, api_key: str, spec_file: Any) -> None:
    bad_key = invoke(submit, str(spec_file(f"key-{secrets.token_hex(3)}")), "--wait", server=server, key="ldk_nope")
    assert bad_key.exit_code == 3
    assert "401 unauthorized" in bad_key.stderr and "--api-key" in bad_key.stderr

    assert invoke(submit, "/no/such/spec.yaml", server=server, key=api_key).exit_code == 3
    assert invoke(jobs, "frobnicate", server=server, key=api_key).exit_code == 3
    missing = invoke(jobs, "get", "job_doesnotexist", server=server, key=api_key)
    assert missing.exit_code == 3 and "job_not_found" in missing.stderr
    no_key = CliRunner().invoke(jobs, ["list", "--server", server.url], env={"LINGUDISTILL_API_KEY": ""})
    assert no_key.exit_code == 3


def test_help_documents_exit_codes() -> None:
    for command, args in ((submit, ["--help"]), (jobs, ["wait", "--help"])):
        text = CliRunner().invoke(command, args).stdout
        assert "1  the job succeeded but a quality gate failed" in text
        assert "3  usage, auth or connection error" in text


def test_local_datasets_are_uploaded_once_per_content_hash(
    server: LiveServer, api_key: str, api: LinguDistillClient, spec_file: Any
) -> None:
    path = spec_file(f"dedupe-{secrets.token_hex(3)}")
    first = invoke(submit, str(path), server=server, key=api_key)
    second = invoke(submit, str(path), server=server, key=api_key)

    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    assert second.stderr.count("already uploaded") == 2
    assert len(api.list_datasets().items) == 2  # text.jsonl and arc.jsonl, once each
    first_job, second_job = (api.get_job(r.stdout.strip()) for r in (first, second))
    assert first_job.spec.mixture[0].uri == second_job.spec.mixture[0].uri


def test_download_verifies_sha256(
    server: LiveServer, api_key: str, api: LinguDistillClient, driver: JobDriver, storage: Any, tmp_path: Path
) -> None:
    import hashlib

    job = api.create_job(_remote_spec(f"dl-{secrets.token_hex(3)}"))
    attempt, _ = driver.start(job.id)
    prefix = f"jobs/{job.id}/checkpoints/step-000000002"
    files = {"model.safetensors": b"weights" * 100, "config.json": b"{}", "training_state.pt": b"optimiser"}
    for file_name, content in files.items():
        (tmp_path / file_name).write_bytes(content)
        storage.put_file(f"{prefix}/{file_name}", tmp_path / file_name)
    driver.checkpoint(job.id, attempt, 2, prefix, {n: hashlib.sha256(c).hexdigest() for n, c in files.items()})

    out = tmp_path / "out"
    result = invoke(jobs, "download", job.id, str(out), "--checkpoint", "--model-only", server=server, key=api_key)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == files["model.safetensors"]

    (tmp_path / "tampered").write_bytes(b"not the weights")
    storage.put_file(f"{prefix}/model.safetensors", tmp_path / "tampered")
    corrupt = invoke(jobs, "download", job.id, str(tmp_path / "again"), "--checkpoint", server=server, key=api_key)
    assert corrupt.exit_code == 3 and "sha256" in corrupt.stderr
    assert not (tmp_path / "again" / "model.safetensors").exists()
    assert not (tmp_path / "again" / "model.safetensors.part").exists()


def _remote_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "student": "s3://models/student",
        "teacher": "s3://models/teacher",
        "mixture": [{"name": "text", "uri": "s3://data/text.jsonl", "distill": True}],
        "training": {"max_steps": 4},
    }


# --- issue 15: idempotent CI submits, clear small errors, plots beside the report ----------------------------------
CI_MARKERS = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "TF_BUILD", "JENKINS_URL")


def github_env(run_id: str, attempt: str) -> dict[str, str | None]:
    cleared: dict[str, str | None] = dict.fromkeys(CI_MARKERS)
    return {**cleared, "GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": attempt}


def test_retrying_a_ci_step_attaches_to_the_first_job(
    server: LiveServer, api_key: str, api: LinguDistillClient, spec_file: Any
) -> None:
    path = str(spec_file(f"ci-{secrets.token_hex(3)}"))
    args = [path, "--server", server.url, "--api-key", api_key]
    run_id = str(secrets.randbelow(10**9))

    first = CliRunner().invoke(submit, args, env=github_env(run_id, "1"))
    retried = CliRunner().invoke(submit, args, env=github_env(run_id, "1"))
    rerun = CliRunner().invoke(submit, args, env=github_env(run_id, "2"))  # "Re-run jobs": a new attempt

    assert first.exit_code == retried.exit_code == rerun.exit_code == 0, first.stderr + retried.stderr
    assert retried.stdout == first.stdout
    assert "already submitted with this idempotency key" in retried.stderr
    assert rerun.stdout != first.stdout
    assert "GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT" in first.stderr


def test_an_explicit_idempotency_key_wins_outside_ci(server: LiveServer, api_key: str, spec_file: Any) -> None:
    path = str(spec_file(f"key-{secrets.token_hex(3)}"))
    key = f"release-{secrets.token_hex(4)}"
    outside_ci = dict.fromkeys(CI_MARKERS)
    first, again, fresh = (
        CliRunner().invoke(submit, [path, *extra, "--server", server.url, "--api-key", api_key], env=outside_ci)
        for extra in (["--idempotency-key", key], ["--idempotency-key", key], [])
    )
    assert first.stdout == again.stdout and fresh.stdout != first.stdout


def test_no_key_says_how_to_create_one(server: LiveServer, spec_file: Any) -> None:
    path = str(spec_file(f"nokey-{secrets.token_hex(3)}"))
    result = CliRunner().invoke(submit, [path, "--server", server.url], env={"LINGUDISTILL_API_KEY": ""})
    assert result.exit_code == 3
    assert "lingudistill keys create --tenant NAME" in result.stderr


def test_timeout_is_reported_as_a_timeout_with_the_way_back(server: LiveServer, api_key: str, spec_file: Any) -> None:
    args = ["--wait", "--timeout", "0.3", "--poll-interval", "0.1"]
    result = invoke(submit, str(spec_file(f"slow-{secrets.token_hex(3)}")), *args, server=server, key=api_key)
    job_id = result.stdout.strip()
    assert result.exit_code == 3
    assert f"timed out after 0.3 s waiting for job {job_id}, which keeps running" in result.stderr
    assert f"lingudistill jobs wait {job_id}" in result.stderr
    assert "verdict" not in result.stderr


def test_download_of_a_missing_checkpoint_fails_clearly(
    server: LiveServer, api_key: str, api: LinguDistillClient, tmp_path: Path
) -> None:
    job = api.create_job(_remote_spec(f"nockpt-{secrets.token_hex(3)}"))
    result = invoke(jobs, "download", job.id, str(tmp_path / "out"), "--checkpoint", server=server, key=api_key)
    assert result.exit_code == 3
    assert f"job {job.id} has no complete checkpoint" in result.stderr


def test_local_models_are_checked_before_any_upload(
    server: LiveServer, api_key: str, api: LinguDistillClient, spec_file: Any
) -> None:
    path = spec_file(f"nomodel-{secrets.token_hex(3)}", teacher="./no-such-teacher")
    result = invoke(submit, str(path), server=server, key=api_key)
    assert result.exit_code == 3
    assert f"teacher: model not found: {path.parent / 'no-such-teacher'}" in result.stderr
    assert api.list_datasets().items == []  # nothing was uploaded


def test_a_local_model_outside_the_allowed_roots_names_the_setting(
    server: LiveServer, api_key: str, spec_file: Any
) -> None:
    path = spec_file(f"roots-{secrets.token_hex(3)}", student="./student")
    (path.parent / "student").mkdir()
    (path.parent / "student" / "config.json").write_text("{}")
    (path.parent / "student" / "model.safetensors").write_bytes(b"weights")
    result = invoke(submit, str(path), server=server, key=api_key)
    assert result.exit_code == 3
    assert "body.student:" in result.stderr
    assert "allowed only under the server's LINGUDISTILL_ALLOWED_LOCAL_ROOTS (nowhere: none is configured)" in (
        result.stderr
    )


def test_the_report_is_written_with_its_plots_beside_it(
    server: LiveServer, api_key: str, api: LinguDistillClient, driver: JobDriver, storage: Any, tmp_path: Path
) -> None:
    job = api.create_job(_remote_spec(f"plots-{secrets.token_hex(3)}"))
    attempt, spec = driver.start(job.id)
    driver.succeed(job.id, attempt, make_report(spec, after_language=0.7))
    stored = {"report.md": "# Recovery report\n\n![scores](scores.svg)\n![loss](loss.svg)\n", "scores.svg": "<svg/>"}
    for name, text in stored.items():
        (tmp_path / name).write_text(text)
        storage.put_file(f"jobs/{job.id}/artifacts/{name}", tmp_path / name)

    out = tmp_path / "ci" / "report.md"
    out.parent.mkdir()
    result = invoke(jobs, "wait", job.id, "--report", str(out), server=server, key=api_key)

    assert result.exit_code == 0, result.stderr
    assert out.read_text() == stored["report.md"]
    assert (out.parent / "scores.svg").read_text() == "<svg/>"
    assert "the report links loss.svg, which the server does not have" in result.stderr


def test_the_eta_follows_the_average_pace_not_the_last_step() -> None:
    now = [0.0]
    eta = SmoothedEta(clock=lambda: now[0])
    assert eta(0, 100) is None  # no pace seen yet
    for step in range(10, 50, 10):  # 10 steps every 10 s: 1 step/s
        now[0] += 10
        steady = eta(step, 100)
    assert steady == 60.0  # step 40: 60 steps left at 1 step/s
    now[0] += 1  # then one burst of 10 steps in a second, a pace that would say 5 s
    burst = eta(50, 100)
    assert burst is not None and 5.0 < burst < 50.0  # it moves towards the new pace without jumping to it
