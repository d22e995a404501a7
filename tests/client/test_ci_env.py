"""The default Idempotency-Key of a submit from CI: the same for a retry inside one CI job run, new otherwise."""

from __future__ import annotations

from service.client.ci_env import ci_idempotency_key

BODY = {"name": "repair", "student": "s3://m/student"}
GITLAB = {"GITLAB_CI": "true", "CI_PIPELINE_ID": "812", "CI_JOB_NAME": "repair vlm", "CI_JOB_ID": "1"}


def test_outside_ci_there_is_no_default() -> None:
    assert ci_idempotency_key(BODY, {"HOME": "/root"}) is None
    assert ci_idempotency_key(BODY, {"GITHUB_ACTIONS": "true"}) is None  # no run id: nothing to derive from


def test_a_gitlab_retry_is_the_same_key_and_another_pipeline_or_spec_is_not() -> None:
    first = ci_idempotency_key(BODY, GITLAB)
    assert first is not None and first.key.startswith("ci-gitlab-") and first.key.isascii()
    assert ci_idempotency_key(BODY, {**GITLAB, "CI_JOB_ID": "2"}) == first  # `retry:` runs the job under a new id
    assert ci_idempotency_key(BODY, {**GITLAB, "CI_PIPELINE_ID": "813"}) != first
    assert ci_idempotency_key({**BODY, "name": "other"}, GITLAB) != first  # two specs in one CI job: two jobs


def test_github_counts_a_re_run_as_a_new_attempt() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "99", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "repair"}
    first = ci_idempotency_key(BODY, env)
    assert first is not None and first.variables == ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB")
    assert ci_idempotency_key(BODY, env) == first
    assert ci_idempotency_key(BODY, {**env, "GITHUB_RUN_ATTEMPT": "2"}) != first


def test_jenkins_is_recognised_by_its_url() -> None:
    key = ci_idempotency_key(BODY, {"JENKINS_URL": "https://ci.example.com/", "BUILD_TAG": "jenkins-repair-7"})
    assert key is not None and key.system == "jenkins" and key.variables == ("BUILD_TAG",)
