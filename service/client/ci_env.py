"""The default Idempotency-Key of `lingudistill submit` inside a CI job, so that retrying the step attaches to the
job the first try created instead of submitting a second one.

The key names the CI job run (system, run, job) and the exact body submitted. A retry the CI system makes by
itself inside that run (GitLab `retry:`, Buildkite automatic retries, Jenkins `retry {}`, a retry wrapper) sees
the same variables, so it sends the same key and gets the first job back. Where the system counts manual
re-runs as a new attempt (GitHub's "Re-run jobs", Azure's job attempt), the attempt is part of the key: a re-run
is a new job, as whoever clicked it expects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CiSystem:
    name: str
    marker: str  # set (to "true" for most) when running under this system
    run_variables: tuple[str, ...]  # the first one is required; together they name one job of one run


CI_SYSTEMS = (
    CiSystem("github", "GITHUB_ACTIONS", ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "GITHUB_REPOSITORY")),
    CiSystem("gitlab", "GITLAB_CI", ("CI_PIPELINE_ID", "CI_JOB_NAME", "CI_NODE_INDEX", "CI_PROJECT_ID")),
    CiSystem("buildkite", "BUILDKITE", ("BUILDKITE_BUILD_ID", "BUILDKITE_STEP_ID", "BUILDKITE_PARALLEL_JOB")),
    CiSystem("circleci", "CIRCLECI", ("CIRCLE_WORKFLOW_ID", "CIRCLE_JOB", "CIRCLE_NODE_INDEX")),
    CiSystem("azure", "TF_BUILD", ("BUILD_BUILDID", "SYSTEM_JOBATTEMPT", "SYSTEM_JOBID")),
    CiSystem("jenkins", "JENKINS_URL", ("BUILD_TAG", "STAGE_NAME")),
)


@dataclass(frozen=True)
class CiKey:
    key: str
    system: str
    variables: tuple[str, ...]  # the variables it was derived from, for the log line


def ci_idempotency_key(body: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> CiKey | None:
    """The key for submitting `body` from this CI job, or None outside CI. It is a digest (CI job names can
    hold spaces and non-ASCII, which a header cannot), of the run's variables and the body: two different specs
    submitted by one CI job get two keys."""
    environ = os.environ if environ is None else environ
    system = next((s for s in CI_SYSTEMS if _running_under(s, environ)), None)
    if system is None:
        return None
    present = tuple(name for name in system.run_variables if environ.get(name))
    parts = [system.name, *(f"{name}={environ[name]}" for name in present), _body_digest(body)]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]
    return CiKey(f"ci-{system.name}-{digest}", system.name, present)


def _running_under(system: CiSystem, environ: Mapping[str, str]) -> bool:
    marker = environ.get(system.marker, "")
    known = marker if system.marker == "JENKINS_URL" else marker.lower() == "true"
    return bool(known) and bool(environ.get(system.run_variables[0]))


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
