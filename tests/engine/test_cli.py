"""`lingudistill train` / `validate`: bad input gets one clear message, exit code 2, and no output folder."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from transformers import AutoConfig

from lingudistill.cli import main
from lingudistill.tiny.common import save_teacher
from lingudistill.tiny.tokenizer import build_tokenizer


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _edit_spec(spec_path, **changes):
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(changes)
    spec_path.write_text(yaml.safe_dump(spec))


def _assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code in (1, 2), result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_train_writes_metrics_and_model(tiny_job):
    out = tiny_job.parent / "out"
    result = _run("train", str(tiny_job), "--output", str(out))
    assert result.exit_code == 0, result.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 7))
    assert (out / "model" / "config.json").is_file()
    assert json.loads((out / "spec.json").read_text())["training"]["seed"] == 7


def test_validate_reports_record_counts(tiny_job):
    result = _run("validate", str(tiny_job))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == {"text": 16, "vqa": 12}


def test_mismatched_teacher_names_the_mismatch(tiny_job):
    folder = tiny_job.parent
    config = AutoConfig.from_pretrained(folder / "teacher")
    config.num_hidden_layers = 3
    tokenizer = build_tokenizer()
    save_teacher(config, tokenizer, folder / "bad-teacher", None, seed=0)
    _edit_spec(tiny_job, teacher="bad-teacher")
    result = _run("train", str(tiny_job), "--output", str(folder / "out"))
    _assert_user_error(result, "decoder layers: student 2, teacher 3")
    assert not (folder / "out").exists()


def test_missing_data_file_is_named(tiny_job):
    spec = yaml.safe_load(tiny_job.read_text())
    spec["mixture"][0]["uri"] = "data/nope.jsonl"
    tiny_job.write_text(yaml.safe_dump(spec))
    result = _run("train", str(tiny_job), "--output", str(tiny_job.parent / "out"))
    _assert_user_error(result, "nope.jsonl")
    assert not (tiny_job.parent / "out").exists()


def test_malformed_jsonl_line_names_source_and_line(tiny_job):
    path = tiny_job.parent / "data" / "text.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = '{"prompt": "what is", "response": '
    path.write_text("\n".join(lines) + "\n")
    result = _run("train", str(tiny_job), "--output", str(tiny_job.parent / "out"))
    _assert_user_error(result, "text", "text.jsonl:5")
    assert not (tiny_job.parent / "out").exists()


def test_undecodable_image_is_named(tiny_job):
    (tiny_job.parent / "data" / "images" / "2.png").write_bytes(b"this is not a png")
    result = _run("validate", str(tiny_job))
    _assert_user_error(result, "vqa", "vqa.jsonl:3", "2.png")


def test_missing_student_is_named(tiny_job):
    _edit_spec(tiny_job, student="no-such-student")
    result = _run("validate", str(tiny_job))
    _assert_user_error(result, "no-such-student")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"epochs": 3}, "epochs"),
        ({"method": {"kv_sharing": "sideways"}}, "method.kv_sharing"),
        ({"training": {"max_steps": 0}}, "training.max_steps"),
    ],
)
def test_bad_spec_field_is_named(tiny_job, change, fragment):
    _edit_spec(tiny_job, **change)
    result = _run("train", str(tiny_job), "--output", str(tiny_job.parent / "out"))
    _assert_user_error(result, fragment)
    assert not (tiny_job.parent / "out").exists()


def _teacher_with_rope_theta(folder, theta: float):
    """A copy of the tiny job's teacher whose rope base differs from the student's decoder."""
    config = AutoConfig.from_pretrained(folder / "teacher")
    config.rope_parameters = {**config.rope_parameters, "rope_theta": theta}
    save_teacher(config, build_tokenizer(), folder / "rope-teacher", None, seed=0)


@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_rope_mismatch_is_refused_by_name(tiny_job, command):
    folder = tiny_job.parent
    _teacher_with_rope_theta(folder, 500_000.0)
    _edit_spec(tiny_job, teacher="rope-teacher")
    args = [command, str(tiny_job)] + (["--output", str(folder / "out")] if command == "train" else [])
    result = _run(*args)
    theta = ('"rope_theta": 10000.0', '"rope_theta": 500000.0')
    _assert_user_error(result, "rope: student", *theta, "allow_rope_mismatch")
    assert not (folder / "out").exists()


def test_an_allowed_rope_mismatch_validates_with_a_warning(tiny_job):
    folder = tiny_job.parent
    _teacher_with_rope_theta(folder, 500_000.0)
    spec = yaml.safe_load(tiny_job.read_text())
    spec["teacher"] = "rope-teacher"
    spec["method"]["allow_rope_mismatch"] = True
    tiny_job.write_text(yaml.safe_dump(spec))
    with pytest.warns(UserWarning, match="rope: student .* allowed by method.allow_rope_mismatch"):
        result = _run("validate", str(tiny_job))
    assert result.exit_code == 0, result.output
