"""Loading models from URIs: s3:// through the content-addressed cache, hf:// parsing, and refusals."""

from __future__ import annotations

import json

import pytest

from lingudistill.models.loading import ModelLoadError, load_student, load_teacher, parameter_count, resolve
from lingudistill.tiny.llava import build_llava
from tests.data.conftest import bucket, isolated_environment, moto_endpoint  # noqa: F401 - fixtures


def _upload_folder(bucket, folder, prefix: str) -> str:  # noqa: F811 - `bucket` is the fixture's value
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        bucket.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return bucket.uri(prefix)


def test_student_and_teacher_load_from_s3_like_from_a_folder(tmp_path, bucket):  # noqa: F811
    student_dir, teacher_dir = build_llava(tmp_path / "local")
    student_uri = _upload_folder(bucket, student_dir, "models/student")
    teacher_uri = _upload_folder(bucket, teacher_dir, "models/teacher")
    student, teacher = load_student(student_uri), load_teacher(teacher_uri)
    assert parameter_count(student.model) == parameter_count(load_student(str(student_dir)).model)
    assert student.source.location != str(student_dir), "loaded from the cache, not the local folder"
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_hf_uris_name_a_repository_and_a_revision():
    assert resolve("hf://Qwen/Qwen2-VL-2B-Instruct@a1b2c3").kwargs() == {"revision": "a1b2c3"}
    assert resolve("hf://Qwen/Qwen2-VL-2B-Instruct").location == "Qwen/Qwen2-VL-2B-Instruct"


def test_pickled_weights_are_refused_with_their_names(tmp_path):
    student_dir, _ = build_llava(tmp_path)
    (student_dir / "model.safetensors").rename(student_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"no \.safetensors weights \(found pickled weights pytorch_model\.bin"):
        load_student(str(student_dir))


def test_a_model_that_needs_remote_code_is_refused(tmp_path):
    student_dir, _ = build_llava(tmp_path)
    config = json.loads((student_dir / "config.json").read_text())
    config.update(model_type="my_custom_vlm", auto_map={"AutoConfig": "modeling_custom.CustomConfig"})
    (student_dir / "config.json").write_text(json.dumps(config))
    (student_dir / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="remote code"):
        load_student(str(student_dir))


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model not found: .*nowhere"):
        load_student(str(tmp_path / "nowhere"))
