"""The job spec: one model, strict, range-checked, defaults resolved and written back."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from lingudistill.spec import JobSpec, SpecError, load_spec

MINIMAL = {
    "name": "repair-1",
    "student": "s3://models/student",
    "teacher": "hf://Org/LM@abc123",
    "mixture": [{"name": "text", "uri": "data/text.jsonl", "distill": True}],
}


def test_defaults_are_resolved_with_a_generated_seed_recorded():
    spec = JobSpec.model_validate(MINIMAL)
    assert spec.training.seed is None
    resolved = spec.resolved()
    assert isinstance(resolved.training.seed, int)
    dumped = resolved.model_dump()
    assert dumped["method"]["kv_sharing"] == "prompt"
    assert dumped["method"]["kd_sources"] == "selective"
    assert JobSpec.model_validate(dumped) == resolved, "the stored spec alone reproduces the job"


def test_an_explicit_seed_is_kept():
    spec = JobSpec.model_validate({**MINIMAL, "training": {"seed": 123}})
    assert spec.resolved().seed == 123


@pytest.mark.parametrize(
    ("patch", "location"),
    [
        ({"unknown": 1}, ("unknown",)),
        ({"training": {"lr": -1}}, ("training", "lr")),
        ({"training": {"batch_sise": 8}}, ("training", "batch_sise")),
        ({"method": {"temperature": 0}}, ("method", "temperature")),
        ({"method": {"divergence": "kl"}}, ("method", "divergence")),
        ({"mixture": []}, ("mixture",)),
        ({"name": "has spaces"}, ("name",)),
    ],
)
def test_invalid_fields_are_named(patch, location):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**MINIMAL, **patch})
    assert any(tuple(str(p) for p in error["loc"][: len(location)]) == location for error in info.value.errors())


def test_selective_kd_needs_a_distilled_source():
    body = {**MINIMAL, "mixture": [{"name": "vqa", "uri": "v.jsonl", "distill": False}]}
    with pytest.raises(ValidationError, match="no mixture source has distill"):
        JobSpec.model_validate(body)


def test_duplicate_source_names_are_refused():
    source = {"name": "text", "uri": "a.jsonl", "distill": True}
    with pytest.raises(ValidationError, match="repeated: text"):
        JobSpec.model_validate({**MINIMAL, "mixture": [source, source]})


def test_distills_follows_kd_sources():
    spec = JobSpec.model_validate(
        {**MINIMAL, "mixture": [*MINIMAL["mixture"], {"name": "vqa", "uri": "v.jsonl", "distill": False}]}
    )
    text, vqa = spec.mixture
    assert spec.distills(text) and not spec.distills(vqa)
    spec.method.kd_sources = "all"
    assert spec.distills(vqa)
    spec.method.kd_sources = "none"
    assert not spec.distills(text)


def test_loads_yaml_and_json_with_local_paths_relative_to_the_spec(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(MINIMAL))
    (tmp_path / "spec.yaml").write_text(
        "name: repair-1\nstudent: ./student\nteacher: hf://Org/LM\n"
        "mixture:\n  - {name: text, uri: data/text.jsonl, distill: true}\n"
    )
    from_json = load_spec(tmp_path / "spec.json")
    from_yaml = load_spec(tmp_path / "spec.yaml")
    assert from_json.mixture[0].uri == str(tmp_path / "data" / "text.jsonl")
    assert from_yaml.student == str(tmp_path / "student")
    assert from_yaml.teacher == "hf://Org/LM"
    assert from_json.student == "s3://models/student"


def test_unreadable_or_non_mapping_spec_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
