"""`lingudistill sweep submit` against the live server: the exit codes, JUnit with a case per arm and per gate,
a base spec given by path, and the CI idempotency key. The arms are moved through their lifecycle by the service's
repository, as a worker does, while the CLI waits over HTTP."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from service.client.cli import sweep
from tests.client.live import JobDriver, LiveServer, make_report
from tests.client.test_cli import WAIT, invoke, junit_cases, worker

Outcome = Callable[[JobDriver, str, int, Any], None]


def succeed(after_language: float) -> Outcome:
    """Succeed with a report whose mean recovery is (after - 0.4) / 0.4."""
    return lambda driver, job_id, attempt, spec: driver.succeed(job_id, attempt, make_report(spec, after_language))


def fail(driver: JobDriver, job_id: str, attempt: int, spec: Any) -> None:
    driver.fail(job_id, attempt)


@contextmanager
def arms_worker(driver: JobDriver, outcomes: dict[str, Outcome]) -> Iterator[None]:
    """A worker thread per named arm job (tests.client.test_cli.worker), each running it to its outcome."""
    with ExitStack() as stack:
        for name, outcome in outcomes.items():
            stack.enter_context(worker(driver, name, functools.partial(outcome, driver)))
        yield


def sweep_file(spec_file: Any, tmp_path: Path, name: str, **extra: Any) -> Path:
    """A sweep over kd_weight whose base is the spec file of `name` (min_recovery gate 0.25), named by path."""
    spec_file(name)
    path = tmp_path / f"{name}-sweep.yaml"
    path.write_text(yaml.safe_dump({"base": f"{name}.yaml", "grid": {"method.kd_weight": [1, 2]}, **extra}))
    return path


def test_the_best_arms_gates_decide_exit_1_with_a_junit_case_per_arm_and_gate(
    server: LiveServer, api_key: str, driver: JobDriver, spec_file: Any, tmp_path: Path
) -> None:
    name = f"swg-{secrets.token_hex(3)}"
    junit = tmp_path / "sweep.xml"
    outcomes = {f"{name}-arm1": succeed(0.45), f"{name}-arm2": succeed(0.42)}  # recovery 0.125 and 0.05 < 0.25

    with arms_worker(driver, outcomes):
        path = sweep_file(spec_file, tmp_path, name)
        result = invoke(sweep, "submit", str(path), *WAIT, "--junit", str(junit), server=server, key=api_key)

    assert result.exit_code == 1, result.stderr
    assert "best arm: method.kd_weight=1" in result.stderr and "gate min_recovery: FAIL" in result.stderr
    cases = junit_cases(junit)
    assert list(cases) == ["method.kd_weight=1", "method.kd_weight=2", "min_recovery", "max_vision_drop"]
    assert cases["method.kd_weight=1"] is None and cases["max_vision_drop"] is None
    assert "threshold 0.25" in (cases["min_recovery"] or "")
    assert result.stdout.strip().startswith("swp_")


def test_a_failed_arm_is_left_out_and_fails_its_junit_case(
    server: LiveServer, api_key: str, driver: JobDriver, spec_file: Any, tmp_path: Path
) -> None:
    name = f"swf-{secrets.token_hex(3)}"
    junit = tmp_path / "sweep.xml"
    outcomes = {f"{name}-arm1": fail, f"{name}-arm2": succeed(0.7)}  # recovery 0.75

    with arms_worker(driver, outcomes):
        path = sweep_file(spec_file, tmp_path, name)
        result = invoke(sweep, "submit", str(path), *WAIT, "--junit", str(junit), server=server, key=api_key)

    assert result.exit_code == 0, result.stderr
    assert "best arm: method.kd_weight=2" in result.stderr and "verdict: PASSED" in result.stderr
    cases = junit_cases(junit)
    assert cases["method.kd_weight=1"] == "arm failed: bad_input"
    assert cases["method.kd_weight=2"] is None and cases["min_recovery"] is None


def test_no_arm_succeeding_is_exit_2(
    server: LiveServer, api_key: str, driver: JobDriver, spec_file: Any, tmp_path: Path
) -> None:
    name = f"swx-{secrets.token_hex(3)}"
    with arms_worker(driver, {f"{name}-arm1": fail, f"{name}-arm2": fail}):
        result = invoke(sweep, "submit", str(sweep_file(spec_file, tmp_path, name)), *WAIT, server=server, key=api_key)

    assert result.exit_code == 2, result.stderr
    assert "failed; best arm: none" in result.stderr


def test_a_retried_ci_step_gets_the_same_sweep_back(
    server: LiveServer, api_key: str, spec_file: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    for variable, value in {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "77", "GITHUB_JOB": "sweep"}.items():
        monkeypatch.setenv(variable, value)
    path = sweep_file(spec_file, tmp_path, f"swi-{secrets.token_hex(3)}")

    first = invoke(sweep, "submit", str(path), server=server, key=api_key)
    again = invoke(sweep, "submit", str(path), server=server, key=api_key)

    assert first.exit_code == again.exit_code == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.startswith("swp_")
    assert "already submitted with this idempotency key" in again.stderr
    status = invoke(sweep, "status", first.stdout.strip(), server=server, key=api_key)
    assert status.exit_code == 0 and '"method.kd_weight=2"' in status.stdout


def test_a_bad_grid_path_is_exit_3_naming_the_path_and_the_arm(
    server: LiveServer, api_key: str, spec_file: Any, tmp_path: Path
) -> None:
    name = f"swb-{secrets.token_hex(3)}"
    spec_file(name)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": f"{name}.yaml", "grid": {"method.kd_wieght": [1]}}))

    result = invoke(sweep, "submit", str(path), server=server, key=api_key)

    assert result.exit_code == 3
    assert "invalid_sweep" in result.stderr and "arm method.kd_wieght=1" in result.stderr
