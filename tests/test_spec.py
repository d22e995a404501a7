"""The job spec: one model, strict, range-checked, defaults resolved and written back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from lingudistill.spec import JobSpec, SpecError, load_spec, local_input_problems, read_spec

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


@pytest.mark.parametrize(
    ("given", "mode"),
    [(None, "step"), ("step", "step"), ("pool", "pool"), ("off", "off"), (True, "pool"), (False, "off")],
)
def test_length_grouping_defaults_to_step_and_reads_the_booleans_from_before_its_modes(given, mode):
    training = {} if given is None else {"group_by_length": given}
    spec = JobSpec.model_validate({**MINIMAL, "training": training})
    assert spec.training.group_by_length == mode
    assert JobSpec.model_validate(spec.resolved().model_dump()).training.group_by_length == mode


@pytest.mark.parametrize("text", ["off", "false", "step", "pool", "true"])
def test_length_grouping_in_yaml_including_its_boolean_words(tmp_path, text):
    (tmp_path / "spec.yaml").write_text(
        "name: repair-1\nstudent: s3://m/s\nteacher: hf://Org/LM\n"
        f"mixture: [{{name: text, uri: t.jsonl, distill: true}}]\ntraining: {{group_by_length: {text}}}\n"
    )
    expected = {"off": "off", "false": "off", "step": "step", "pool": "pool", "true": "pool"}[text]
    assert load_spec(tmp_path / "spec.yaml").training.group_by_length == expected


@pytest.mark.parametrize("given", ["yes", "steps", 1, None])
def test_an_unknown_length_grouping_is_refused(given):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**MINIMAL, "training": {"group_by_length": given}})
    assert info.value.errors()[0]["loc"] == ("training", "group_by_length")


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


TYPO_SPEC = """\
name: repair-1
student: s3://models/student
teacher: hf://Org/LM
mixture:
  - {name: text, uri: data/text.jsonl, distill: true}
training:
  max_step: 10
  lr: -1
"""


def test_a_person_reads_each_problem_with_its_line_column_and_a_suggestion(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(TYPO_SPEC)
    with pytest.raises(SpecError) as info:
        read_spec(path)
    lines = str(info.value).splitlines()
    assert lines[1].strip() == f"{path}:7:3: training.max_step: unknown field; did you mean `max_steps`?"
    assert lines[2].strip() == f"{path}:8:7: training.lr: Input should be greater than 0"


def test_json_specs_and_missing_fields_are_located_too(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**MINIMAL, "mixtures": []}, indent=2))
    with pytest.raises(SpecError) as info:
        read_spec(path)
    assert f"{path}:" in str(info.value) and "mixtures: unknown field; did you mean `mixture`?" in str(info.value)
    path.write_text(json.dumps({key: value for key, value in MINIMAL.items() if key != "teacher"}))
    with pytest.raises(SpecError, match=r"spec.json:1:1: teacher: required field is missing"):
        read_spec(path)


def test_syntax_errors_give_the_position(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: a\nmixture: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml:3:1: not valid YAML"):
        read_spec(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text('{"name": "a",\n "x": }')
    with pytest.raises(SpecError, match=r"bad.json:2:7: not valid JSON"):
        read_spec(tmp_path / "bad.json")


def test_missing_local_inputs_are_named_by_their_field(tmp_path):
    (tmp_path / "student").mkdir()
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text("{}")
    (tmp_path / "teacher" / "pytorch_model.bin").write_bytes(b"pickle")
    spec_text = (
        "name: r\nstudent: ./student\nteacher: ./teacher\nmixture:\n  - {name: text, uri: t.jsonl, distill: true}\n"
    )
    (tmp_path / "spec.yaml").write_text(spec_text)
    problems = local_input_problems(load_spec(tmp_path / "spec.yaml"))
    assert problems == [
        f"student: {tmp_path / 'student'} is not a Hugging Face model folder (no config.json)",
        f"teacher: {tmp_path / 'teacher'} has no .safetensors weights (pickled weights are never loaded)",
        f"mixture text: file not found: {tmp_path / 't.jsonl'}",
    ]
    (tmp_path / "spec.yaml").write_text(spec_text.replace("./teacher", "./no-teacher"))
    assert f"teacher: model not found: {tmp_path / 'no-teacher'}" in local_input_problems(
        load_spec(tmp_path / "spec.yaml")
    )


@pytest.mark.parametrize("case", ["unreadable", "typo"])
def test_validate_answers_input_errors_before_importing_torch(tmp_path, case):
    path = tmp_path / "spec.yaml"
    if case == "typo":
        path.write_text(TYPO_SPEC)
    probe = (
        "import atexit, sys; atexit.register(lambda: print('torch:', 'torch' in sys.modules, file=sys.stderr));"
        f"from lingudistill.cli import main; main(['validate', {str(path)!r}])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert ("cannot read spec" if case == "unreadable" else "did you mean `max_steps`") in result.stderr
    assert "torch: False" in result.stderr
