"""URI policy at submission: schemes, datasets, buckets, hf orgs, local roots, and no private network."""

from __future__ import annotations

from pathlib import Path

import pytest

from lingudistill.spec import JobSpec
from service.settings import Settings
from service.uri_policy import DatasetRef, UriPolicy, is_internal_address

PUBLIC = {
    "files.example.com": ["93.184.216.34"],
    "internal.example.com": ["10.1.2.3"],
    "sneaky.example.com": ["93.184.216.34", "127.0.0.1"],
}

DATASETS = {
    "ds_mine": DatasetRef(kind="training", status="ready"),
    "ds_suite": DatasetRef(kind="evaluation", status="ready"),
    "ds_broken": DatasetRef(kind="training", status="invalid"),
}


def policy(**overrides) -> UriPolicy:
    settings = Settings(allowed_schemes=["dataset", "s3", "hf", "file", "https"], **overrides)
    return UriPolicy(settings, find_dataset=DATASETS.get, resolver=lambda host: PUBLIC.get(host, []))


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1/model",
        "https://localhost/model",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://2130706433/x",
        "https://0x7f000001/x",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/x",
        "https://192.168.1.1/x",
        "https://internal.example.com/x",
        "https://sneaky.example.com/x",
        "https://[fd00::1]/x",
        "https://0.0.0.0/x",
    ],
)
def test_private_loopback_and_metadata_addresses_are_refused(uri):
    if "localhost" in uri:
        check = UriPolicy(Settings(allowed_schemes=["https"]), lambda _: None).check(uri)  # real DNS
    else:
        check = policy().check(uri)
    assert check is not None and ("non-public" in check or "resolve" in check), (uri, check)


def test_public_hosts_pass_and_the_private_network_can_be_allowed():
    assert policy().check("https://files.example.com/a.jsonl") is None
    assert policy(allow_private_network=True).check("https://internal.example.com/x") is None
    assert "does not resolve" in policy().check("https://nowhere.invalid/x")


def test_is_internal_address_handles_mapped_ipv6():
    assert is_internal_address("::ffff:10.0.0.1") and is_internal_address("::ffff:127.0.0.1")
    assert not is_internal_address("::ffff:93.184.216.34")


def test_schemes_datasets_buckets_orgs_and_local_roots(tmp_path: Path):
    p = policy(allowed_s3_buckets=["models"], allowed_hf_orgs=["Qwen"], allowed_local_roots=[tmp_path])
    assert "scheme 'http' is not allowed" in p.check("http://files.example.com/x")
    assert "scheme 'ftp'" in p.check("ftp://files.example.com/x")
    assert p.check("dataset://ds_mine") is None and p.check("dataset://ds_theirs") == "no such dataset"
    assert p.check("s3://models/a") is None and "bucket 'other'" in p.check("s3://other/a")
    assert p.check("hf://Qwen/Qwen2-1.5B@main") is None and "organisation 'evil'" in p.check("hf://evil/model")
    assert p.check(f"file://{tmp_path}/data.jsonl") is None and p.check(str(tmp_path / "x")) is None
    assert "only under" in p.check("/etc/passwd")
    assert "only under" in p.check(f"{tmp_path}/../../etc/passwd")  # resolved before the check
    assert "absolute" in p.check("relative/path.jsonl")


def test_violations_name_every_offending_field():
    spec = JobSpec.model_validate(
        {
            "name": "x",
            "student": "https://127.0.0.1/m",
            "teacher": "hf://Qwen/Q",
            "mixture": [{"name": "a", "uri": "s3://ok/a", "distill": True}, {"name": "b", "uri": "dataset://nope"}],
            "evaluation": {
                "language": [{"name": "e", "uri": "/etc/eval.jsonl"}],
                "harness": {"tasks": ["arc_easy"], "include_path": "/srv/tasks"},  # YAMLs can import Python
            },
        }
    )
    locs = [e.loc for e in policy().violations(spec)]
    assert locs == [
        ["body", "student"],
        ["body", "mixture", 1, "uri"],
        ["body", "evaluation", "language", 0, "uri"],
        ["body", "evaluation", "harness", "include_path"],
    ]


def test_submission_refuses_with_a_422_naming_the_field(make_client, new_key, spec_body):
    client = make_client(new_key(), allowed_schemes=["dataset", "s3", "hf", "file", "https"])
    response = client.post("/v1/jobs", json=spec_body(teacher="https://[::ffff:127.0.0.1]/teacher"))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "uri_not_allowed"
    assert problem["errors"][0]["loc"] == ["body", "teacher"] and "non-public" in problem["errors"][0]["msg"]


@pytest.mark.parametrize(
    "uri",
    ["hf://Qwen/Q@../../etc", "hf://Qwen/Q@main/../../x", "hf://Qwen/Q@.git", "hf://Qwen/Q#../../etc/passwd",
     "hf://Qwen/Q@main#a/b", "hf://Qwen/Q@" + "a" * 256],
)  # fmt: skip
def test_hf_revisions_and_splits_that_could_name_a_path_are_refused(uri):
    assert "not a valid" in policy().check(uri)


@pytest.mark.parametrize(
    "uri", ["hf://Qwen/Q@main", "hf://Qwen/Q@refs/pr/12", "hf://Qwen/Q@5d9e2b1f#validation", "hf://Qwen/Q#train.clean"]
)
def test_hf_revisions_and_splits_in_use_are_accepted(uri):
    assert policy().check(uri) is None


def test_a_dataset_must_be_ready_and_of_the_kind_its_field_uses():
    spec = JobSpec.model_validate(
        {
            "name": "x",
            "student": "dataset://ds_mine",
            "teacher": "hf://Qwen/Q",
            "mixture": [
                {"name": "a", "uri": "dataset://ds_mine", "distill": True},
                {"name": "b", "uri": "dataset://ds_suite"},
                {"name": "c", "uri": "dataset://ds_broken"},
            ],
            "evaluation": {
                "language": [{"name": "e", "uri": "dataset://ds_suite"}, {"name": "f", "uri": "dataset://ds_mine"}]
            },
        }
    )
    errors = {tuple(e.loc): e.msg for e in policy().violations(spec)}
    assert errors == {
        ("body", "student"): "'dataset://ds_mine': a dataset cannot be used as a model",
        ("body", "mixture", 1, "uri"): "'dataset://ds_suite': this field needs a dataset of kind 'training', not "
        "'evaluation' (upload it with kind=training)",
        ("body", "mixture", 2, "uri"): "'dataset://ds_broken': the dataset is invalid (see its problems); fix it "
        "and upload it again",
        ("body", "evaluation", "language", 1, "uri"): "'dataset://ds_mine': this field needs a dataset of kind "
        "'evaluation', not 'training' (upload it with kind=evaluation)",
    }


def test_the_policy_checks_every_uri_field_of_the_spec(tmp_path: Path) -> None:
    """JobSpec.uri_fields() is the one list: a refused URI in any of them is reported at its own location."""
    bad = "https://127.0.0.1/x"
    spec = JobSpec.model_validate(
        {
            "name": "all-uris",
            "student": bad,
            "teacher": bad,
            "mixture": [{"name": "text", "uri": bad, "distill": True}],
            "evaluation": {
                "language": [{"name": "quiz", "uri": bad}],
                "vision": [{"name": "shapes", "uri": bad}],
                "harness": {"tasks": ["arc_easy"], "include_path": str(tmp_path / "outside")},
            },
        }
    )
    fields = spec.uri_fields()
    assert [f.role for f in fields] == ["model", "model", "training", "evaluation", "evaluation", "harness"]
    refused = [e.loc for e in policy(allowed_local_roots=[tmp_path / "root"]).violations(spec)]
    assert refused == [["body", *f.path] for f in fields]


def test_with_uris_replaces_exactly_the_named_fields() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "x",
            "student": "s3://m/s",
            "teacher": "s3://m/t",
            "mixture": [{"name": "a", "uri": "a.jsonl", "distill": True}],
        }
    )
    moved = spec.with_uris({("mixture", 0, "uri"): "dataset://ds_1"})
    assert [f.uri for f in moved.uri_fields()] == ["s3://m/s", "s3://m/t", "dataset://ds_1"]
    assert spec.mixture[0].uri == "a.jsonl"  # the original is unchanged
